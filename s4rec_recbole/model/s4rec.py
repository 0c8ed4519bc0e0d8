"""S4Rec: online self-supervised self-distillation for sequential recommendation.

Wei et al., "Leave No One Behind: Online Self-Supervised Self-Distillation for Sequential
Recommendation", WWW 2024 (arXiv 2404.07219). Every formula and choice follows
``shared/docs/S4REC_SPEC.md``; the defaults are in ``properties/model/S4Rec.yaml``.

Loss: ``L = L_SR + alpha*L_clust + beta1*L_scl + beta2*L_ckd + lambda*L_adv``, returned as the tuple
``(rec, clust, scl, ckd, adv)`` of weighted parts; a part whose weight is 0 is not computed at all.
"""
import numpy as np
import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender import SASRec

from s4rec_recbole.layers import (
    LengthAdversary, MaskableEmbedding, PrototypeLayer, SequenceAugmenter, distill_kl, head_threshold,
    info_nce, kmeans, sinkhorn, swav_loss,
)
from s4rec_recbole.model import register


def trim(item_seq, item_seq_len):
    """Drop the padding columns after the batch's longest sequence: ``[B, L] -> [B, max(len)]``.

    With right padding and causal attention the outputs at real positions do not change.
    """
    return item_seq[:, : int(item_seq_len.max().item())]


def training_lengths(dataset):
    """Per-user training-sequence lengths (users with at least one training sample)."""
    uid = dataset.inter_feat[dataset.uid_field].numpy()
    # A user with n training items has n - 1 prefix samples.
    return np.bincount(uid)[np.unique(uid)] + 1


def training_item_freq(dataset):
    """``[n_items]`` count of each item in the training sequences (targets plus each user's first item)."""
    n_items = dataset.item_num
    iid = dataset.inter_feat[dataset.iid_field]
    seq = dataset.inter_feat[dataset.iid_field + dataset.config["LIST_SUFFIX"]]
    length = dataset.inter_feat[dataset.config["ITEM_LIST_LENGTH_FIELD"]]
    first = seq[length == 1, 0]
    freq = torch.bincount(iid, minlength=n_items) + torch.bincount(first, minlength=n_items)
    freq = freq.float()
    freq[0] = 0
    return freq


def _float_in(config, key, low, high):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{key}={value!r}: expected a number in [{low}, {high}]")
    return float(value)


@register
class S4Rec(SASRec):
    r"""SASRec encoder trained with five objectives (next item, online clustering, sequence contrast
    with prototype negatives, cluster-aware self-distillation, head/tail adversary).

    Shapes: ``item_seq [B, L]`` right-padded item ids, ``item_seq_len [B]``; ``forward -> [B, d]`` (the
    output at the last real position); ``full_sort_predict -> [B, n_items]``.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.alpha = _float_in(config, "alpha", 0, float("inf"))
        self.beta1 = _float_in(config, "beta1", 0, float("inf"))
        self.beta2 = _float_in(config, "beta2", 0, float("inf"))
        self.lmd = _float_in(config, "lambda", 0, float("inf"))
        self.tau1 = _float_in(config, "tau1", 1e-6, float("inf"))
        self.tau2 = _float_in(config, "tau2", 1e-6, float("inf"))
        self.tau3 = _float_in(config, "tau3", 1e-6, float("inf"))
        self.sinkhorn_eps = _float_in(config, "sinkhorn_eps", 1e-6, float("inf"))
        self.sinkhorn_iters = int(config["sinkhorn_iters"])
        self.n_clusters = int(config["n_clusters"])
        self.sim = config["sim"]
        self.seq_pooling = config["seq_pooling"]
        self.clustering = config["clustering"]
        for key, value, accepted in (("sim", self.sim, ("dot", "cos")), ("seq_pooling", self.seq_pooling, ("last", "mean")),
                                     ("clustering", self.clustering, ("online", "kmeans"))):
            if value not in accepted:
                raise ValueError(f"{key}={value!r}: expected one of {list(accepted)}")

        # The mask token is id n_items; scoring still covers exactly the n_items real ids.
        self.item_embedding = MaskableEmbedding(self.item_embedding.weight, self.initializer_range)
        self.prototypes = PrototypeLayer(self.n_clusters, self.hidden_size, self.initializer_range)
        self.register_buffer("centroids", torch.zeros(self.n_clusters, self.hidden_size))
        self.augmenter = SequenceAugmenter(
            self.n_items, operators=tuple(config["aug_operators"]), crop_ratio=config["crop_ratio"],
            mask_ratio=config["mask_ratio"], reorder_ratio=config["reorder_ratio"],
            insert_ratio=config["insert_ratio"], item_freq=training_item_freq(dataset))
        self.adversary = LengthAdversary(self.hidden_size, config["grl_scale"])
        self.head_min_length = head_threshold(training_lengths(dataset), _float_in(config, "head_ratio", 0, 1))
        self.embed_batch_size = int(config["eval_batch_size"])
        self.seed = int(config["seed"])

    # ------------------------------------------------------------------ encoder
    def encode(self, item_seq):
        """All positions' outputs ``[B, L', d]`` of the trimmed sequences (SASRec's encoder)."""
        position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
        input_emb = self.item_embedding(item_seq) + self.position_embedding(position_ids).unsqueeze(0)
        input_emb = self.dropout(self.LayerNorm(input_emb))
        attention_mask = self.get_attention_mask(item_seq)
        return self.trm_encoder(input_emb, attention_mask, output_all_encoded_layers=True)[-1]

    def forward(self, item_seq, item_seq_len):
        """``[B, L], [B] -> [B, d]``: the output at each sequence's last real position."""
        return self.gather_indexes(self.encode(trim(item_seq, item_seq_len)), item_seq_len - 1)

    def embed(self, item_seq, item_seq_len):
        """``(last [B, d], z [B, d])``: the next-item representation and ``z_u`` under ``seq_pooling``
        (the same last-position vector, or the mean over real positions), from one encoder pass."""
        item_seq = trim(item_seq, item_seq_len)
        out = self.encode(item_seq)
        last = self.gather_indexes(out, item_seq_len - 1)
        if self.seq_pooling == "last":
            return last, last
        real = (item_seq > 0).unsqueeze(-1).float()
        return last, (out * real).sum(1) / real.sum(1).clamp_min(1.0)

    def sequence_embedding(self, item_seq, item_seq_len):
        """``z_u`` ``[B, d]`` under ``seq_pooling``."""
        return self.embed(item_seq, item_seq_len)[1]

    # ------------------------------------------------------------------ losses
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

    def prototype_vectors(self):
        """``[K, d]`` cluster representatives: trainable prototypes (online) or the epoch's K-means centroids."""
        return self.prototypes.weight if self.clustering == "online" else self.centroids

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        seq_output, z = self.embed(item_seq, item_seq_len)
        rec = self.rec_loss(seq_output, interaction)
        zero = rec.new_zeros(())
        clust = scl = ckd = adv = zero
        need_views = self.beta1 > 0 or self.beta2 > 0
        need_assign = need_views or (self.alpha > 0 and self.clustering == "online")
        if not (need_assign or self.lmd > 0):
            return rec, clust, scl, ckd, adv

        if need_assign:
            if self.clustering == "online":
                scores = self.prototypes(z)                                   # [B, K]
                targets = sinkhorn(scores, self.sinkhorn_eps, self.sinkhorn_iters)
                assigned = targets.argmax(dim=1)                              # h(u), [B]
                if self.alpha > 0:
                    clust = self.alpha * swav_loss(scores, targets, self.tau1)
            else:
                assigned = (F.normalize(z.detach(), dim=-1) @ F.normalize(self.centroids, dim=-1).t()).argmax(1)
        if need_views:
            protos = self.prototype_vectors()
            z1 = self.sequence_embedding(*self.augmenter(item_seq, item_seq_len))
            z2 = self.sequence_embedding(*self.augmenter(item_seq, item_seq_len))
            if self.beta1 > 0:
                scl = self.beta1 * (info_nce(z1, z2, self.tau2, self.sim, protos, assigned)
                                    + info_nce(z2, z1, self.tau2, self.sim, protos, assigned))
            if self.beta2 > 0:
                teacher = protos[assigned]
                ckd = self.beta2 * (distill_kl(teacher, z1, self.tau3) + distill_kl(teacher, z2, self.tau3))
        if self.lmd > 0:
            adv = self.lmd * self.adversary.loss(z, item_seq_len >= self.head_min_length)
        return rec, clust, scl, ckd, adv

    # ------------------------------------------------------------------ K-means variant
    @torch.no_grad()
    def on_epoch_start(self, trainer, train_data, epoch_idx):
        """``clustering: kmeans``: K-means over the embeddings of all training samples, once per epoch."""
        if self.clustering != "kmeans" or not (self.beta1 > 0 or self.beta2 > 0):
            return
        was_training = self.training
        self.eval()
        feats = train_data._dataset.inter_feat
        seqs, lens = feats[self.ITEM_SEQ], feats[self.ITEM_SEQ_LEN]
        batch = self.embed_batch_size
        parts = [self.sequence_embedding(seqs[i:i + batch].to(self.centroids.device),
                                         lens[i:i + batch].to(self.centroids.device))
                 for i in range(0, len(seqs), batch)]
        self.centroids.copy_(kmeans(torch.cat(parts), self.n_clusters, seed=self.seed + epoch_idx))
        self.train(was_training)
