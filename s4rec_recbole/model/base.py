"""SASRec encoder shared by the plugin models: trimmed batches, a mask token, augmented views.

The encoder is RecBole's :class:`~recbole.model.sequential_recommender.SASRec` (same parameters, same
initialisation), run on batches trimmed to their longest real sequence, with item id ``n_items``
reserved as the mask token of the augmentations.
"""
import math

import numpy as np
import torch
from recbole.model.sequential_recommender import SASRec

from s4rec_recbole.config import ConfigError, interval
from s4rec_recbole.data.loader import TRAIN_SAMPLES, last_samples

from s4rec_recbole.layers import MaskableEmbedding, SequenceAugmenter, kmeans, use_fast_dropout
from s4rec_recbole.layers.distributed import broadcast, gather_rows, shard, world


def trim(item_seq, item_seq_len):
    """Drop the padding columns after the batch's longest sequence: ``[B, L] -> [B, max(len)]``.

    With right padding and causal attention the outputs at real positions do not change.
    """
    return item_seq[:, : int(item_seq_len.max().item())]


def user_training_lengths(dataset):
    """``[user_num]`` training-sequence length of each user id (0 for users without training samples)."""
    counts = np.bincount(dataset.inter_feat[dataset.uid_field].numpy(), minlength=dataset.user_num)
    return np.where(counts > 0, counts + 1, 0)  # a user with n training items has n - 1 prefix samples


def training_lengths(dataset):
    """Training-sequence lengths of the users with at least one training sample."""
    lengths = user_training_lengths(dataset)
    return lengths[lengths > 0]


def training_item_freq(dataset):
    """``[n_items]`` count of each item in the training sequences (targets plus each user's first item)."""
    n_items = dataset.item_num
    iid = dataset.inter_feat[dataset.iid_field]
    seq = dataset.inter_feat[dataset.iid_field + dataset.config["LIST_SUFFIX"]]
    length = dataset.inter_feat[dataset.config["ITEM_LIST_LENGTH_FIELD"]]
    first = seq[length == 1, 0]
    freq = (torch.bincount(iid, minlength=n_items) + torch.bincount(first, minlength=n_items)).float()
    freq[0] = 0
    return freq


def number(config, key, low=0.0, high=float("inf"), open_low=False, open_high=False, integer=False):
    """``config[key]`` as a float (or int) in the interval from ``low`` to ``high``, else a one-line
    :class:`ConfigError` naming the key, the value and the accepted interval."""
    value = config[key]
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if ok:
        ok = math.isfinite(value) and (low < value if open_low else low <= value) and \
            (value < high if open_high else value <= high)
    if not ok:
        raise ConfigError(f"{key}={value!r}: expected {'an integer' if integer else 'a number'} in "
                          f"{interval(low, high, open_low, open_high)}")
    return int(value) if integer else float(value)


def choice(config, key, accepted):
    value = config[key]
    if value not in accepted:
        raise ConfigError(f"{key}={value!r}: expected one of {list(accepted)}")
    return value


def check_contrastive_batch(config):
    """Contrastive losses need at least two sequences per batch (one positive, one negative)."""
    number(config, "train_batch_size", 2, integer=True)


class ContrastiveSASRec(SASRec):
    r"""SASRec with trimmed batches, a mask token and an augmenter; base of S4Rec, CL4SRec and ICLRec.

    Shapes: ``item_seq [B, L]`` right-padded item ids, ``item_seq_len [B]``; ``forward -> [B, d]`` (the
    output at the last real position); ``full_sort_predict -> [B, n_items]``.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.seq_pooling = choice(config, "seq_pooling", ("last", "mean"))
        # train_samples: sequence -> each batch row is a user's whole training sequence, with a target at every position
        self.all_positions = choice(config, "train_samples", TRAIN_SAMPLES) == "sequence"
        if self.all_positions and self.loss_type != "CE":
            raise ConfigError(f"train_samples='sequence' with loss_type={self.loss_type!r}: expected loss_type 'CE'")
        for key in ("hidden_dropout_prob", "attn_dropout_prob"):
            number(config, key, 0, 1, open_high=True)
        ops = config["aug_operators"]
        if not isinstance(ops, (list, tuple)) or not ops or any(op not in SequenceAugmenter.OPERATORS for op in ops):
            raise ConfigError(f"aug_operators={ops!r}: expected a non-empty list from {list(SequenceAugmenter.OPERATORS)}")
        for key in ("crop_ratio", "mask_ratio", "reorder_ratio", "insert_ratio"):
            number(config, key, 0, 1, open_low=True)
        # The mask token is id n_items; scoring still covers exactly the n_items real ids.
        self.item_embedding = MaskableEmbedding(self.item_embedding.weight, self.initializer_range)
        self.augmenter = SequenceAugmenter(
            self.n_items, operators=tuple(config["aug_operators"]), crop_ratio=config["crop_ratio"],
            mask_ratio=config["mask_ratio"], reorder_ratio=config["reorder_ratio"],
            insert_ratio=config["insert_ratio"],
            item_freq=training_item_freq(dataset))
        # auxiliary losses ramp up linearly over the first aux_warmup epochs (0: full weight from the start)
        self.aux_warmup = number(config, "aux_warmup", 0, integer=True)
        self.aux_scale = self.warmup_factor(0)
        # with several processes: batch-coupled losses over the global batch (see layers/distributed.py)
        self.global_batch = bool(config["global_batch_negatives"])
        self.embed_batch_size = int(config["eval_batch_size"])
        self.seed = int(config["seed"])
        if config["fast_dropout"]:
            use_fast_dropout(self)

    def warmup_factor(self, epoch_idx):
        """Weight factor of the auxiliary losses in ``epoch_idx``: ``min(1, (epoch + 1) / (aux_warmup + 1))``."""
        return min(1.0, (epoch_idx + 1) / (self.aux_warmup + 1))

    def on_epoch_start(self, trainer, train_data, epoch_idx):
        """Set this epoch's weight factor of the auxiliary losses."""
        self.aux_scale = self.warmup_factor(epoch_idx)

    def scaled(self, rec, *aux):
        """``(rec, *aux)`` with the auxiliary parts multiplied by the warm-up factor."""
        return (rec,) + tuple(part * self.aux_scale for part in aux) if self.aux_scale != 1.0 else (rec,) + aux

    # ------------------------------------------------------------------ encoder
    def encode(self, item_seq):
        """All positions' outputs ``[B, L', d]`` of ``item_seq`` ``[B, L']`` (SASRec's encoder)."""
        position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
        input_emb = self.item_embedding(item_seq) + self.position_embedding(position_ids).unsqueeze(0)
        input_emb = self.dropout(self.LayerNorm(input_emb))
        attention_mask = self.get_attention_mask(item_seq)
        return self.trm_encoder(input_emb, attention_mask, output_all_encoded_layers=True)[-1]

    def forward(self, item_seq, item_seq_len):
        """``[B, L], [B] -> [B, d]``: the output at each sequence's last real position."""
        return self.gather_indexes(self.encode(trim(item_seq, item_seq_len)), item_seq_len - 1)

    def pool(self, out, item_seq, item_seq_len):
        """``(last [B, d], z [B, d])`` from the outputs ``out [B, L', d]`` of ``item_seq [B, L']``: the
        next-item representation and the sequence embedding under ``seq_pooling`` (the same vector, or the
        mean over real positions)."""
        last = self.gather_indexes(out, item_seq_len - 1)
        if self.seq_pooling == "last":
            return last, last
        real = (item_seq > 0).unsqueeze(-1).float()
        return last, (out * real).sum(1) / real.sum(1).clamp_min(1.0)

    def embed(self, item_seq, item_seq_len):
        """``(last [B, d], z [B, d])`` from one encoder pass (see :meth:`pool`)."""
        item_seq = trim(item_seq, item_seq_len)
        return self.pool(self.encode(item_seq), item_seq, item_seq_len)

    def rec_and_embedding(self, interaction):
        """``(L_SR, z [B, d])`` from one encoder pass: the batch's next-item loss (at the last position, or at
        every position with ``train_samples: sequence``) and its sequence embeddings."""
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        item_seq = trim(interaction[self.ITEM_SEQ], item_seq_len)
        out = self.encode(item_seq)
        last, z = self.pool(out, item_seq, item_seq_len)
        if self.all_positions:
            return self.sequence_rec_loss(out, item_seq, item_seq_len, interaction[self.POS_ITEM_ID]), z
        return self.rec_loss(last, interaction), z

    def sequence_embedding(self, item_seq, item_seq_len):
        """Sequence embedding ``[B, d]`` under ``seq_pooling``."""
        return self.embed(item_seq, item_seq_len)[1]

    def views(self, item_seq, item_seq_len):
        """Embeddings ``(z1 [B, d], z2 [B, d])`` of two independently augmented views."""
        return (self.sequence_embedding(*self.augmenter(item_seq, item_seq_len)),
                self.sequence_embedding(*self.augmenter(item_seq, item_seq_len)))

    @torch.no_grad()
    def embed_all(self, dataset, rows=slice(None)):
        """Sequence embeddings ``[N, d]`` of the samples ``rows`` (default all) of ``dataset`` (eval mode,
        no gradient), in the samples' order. Chunks are taken in order of length and trimmed to their longest
        sequence, which leaves each embedding as it is and skips most of the padding."""
        was_training = self.training
        self.eval()
        seqs, lens = dataset.inter_feat[self.ITEM_SEQ][rows], dataset.inter_feat[self.ITEM_SEQ_LEN][rows]
        device = self.item_embedding.weight.device
        order = torch.argsort(lens, stable=True)
        out = torch.empty(len(seqs), self.hidden_size, device=device)
        for i in range(0, len(seqs), self.embed_batch_size):
            idx = order[i:i + self.embed_batch_size]
            seq, seq_len = seqs[idx].to(device), lens[idx].to(device)
            out[idx.to(device)] = self.sequence_embedding(trim(seq, seq_len), seq_len)
        self.train(was_training)
        return out

    def read_kmeans_settings(self, config):
        """faiss K-means settings of the models that cluster with it: restarts and points per centroid."""
        self.kmeans_redo = number(config, "kmeans_redo", 1, integer=True)
        self.kmeans_max_points = number(config, "kmeans_max_points_per_centroid", 1, integer=True)

    def kmeans_centroids(self, dataset, k, epoch_idx):
        """K-means centroids ``[k, d]`` of the embeddings of the training samples (faiss): every sample, or
        with ``train_samples: sequence`` each user's whole sequence, the samples that training sees.

        With several processes each rank embeds its contiguous share of the samples, rank 0 clusters the
        gathered embeddings (in the single-process order) and broadcasts the centroids.
        """
        rows = last_samples(dataset) if self.all_positions else torch.arange(len(dataset.inter_feat))
        rank, size = world()
        options = dict(seed=self.seed + epoch_idx, n_redo=self.kmeans_redo,
                       max_points_per_centroid=self.kmeans_max_points)
        if size == 1:
            return kmeans(self.embed_all(dataset, rows), k, **options)
        gathered, _ = gather_rows(self.embed_all(dataset, rows[shard(len(rows))]), grad=False)
        centroids = kmeans(gathered, k, **options) if rank == 0 else \
            gathered.new_zeros(k, gathered.size(1))
        return broadcast(centroids.contiguous())

    # ------------------------------------------------------------------ next-item loss
    def rec_loss(self, seq_output, interaction):
        """Next-item loss ``L_SR`` (full-softmax CE, or BPR with RecBole's sampled negatives)."""
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type == "BPR":
            neg_items = interaction[self.NEG_ITEM_ID]
            pos_score = (seq_output * self.item_embedding(pos_items)).sum(-1)
            neg_score = (seq_output * self.item_embedding(neg_items)).sum(-1)
            return self.loss_fct(pos_score, neg_score)
        logits = seq_output @ self.item_embedding.weight.t()
        return self.loss_fct(logits, pos_items)

    def sequence_rec_loss(self, out, item_seq, item_seq_len, pos_items):
        """Full-softmax CE at every real position of whole training sequences (``train_samples: sequence``):
        position t predicts item t + 1 of ``item_seq [B, L']``, the last real position the sample's target
        ``pos_items [B]``; the mean over all these positions. ``out [B, L', d]`` are the encoder outputs. On a
        user's whole sequence this is the mean of the losses of its prefix samples (tested)."""
        targets = torch.zeros_like(item_seq)
        targets[:, :-1] = item_seq[:, 1:]
        targets[torch.arange(len(item_seq), device=item_seq.device), item_seq_len - 1] = pos_items
        real = torch.arange(item_seq.size(1), device=item_seq.device) < item_seq_len.unsqueeze(1)
        return self.loss_fct(out[real] @ self.item_embedding.weight.t(), targets[real])
