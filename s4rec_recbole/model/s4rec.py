"""S4Rec: online self-supervised self-distillation for sequential recommendation.

Wei et al., "Leave No One Behind: Online Self-Supervised Self-Distillation for Sequential
Recommendation", WWW 2024 (arXiv 2404.07219). Every formula and choice follows
``shared/docs/S4REC_SPEC.md``; the defaults are in ``properties/model/S4Rec.yaml``.

Loss: ``L = L_SR + alpha*L_clust + beta1*L_scl + beta2*L_ckd + lambda*L_adv``, returned as the tuple
``(rec, clust, scl, ckd, adv)`` of weighted parts; a part whose weight is 0 is not computed at all.
"""
import torch
import torch.nn.functional as F

from s4rec_recbole.data.loader import PREFIX_LENGTH_FIELD
from s4rec_recbole.layers import LengthAdversary, PrototypeLayer, distill_kl, head_threshold, info_nce, sinkhorn, swav_loss
from s4rec_recbole.model import register
from s4rec_recbole.model.base import ContrastiveSASRec, check_contrastive_batch, choice, number, training_lengths


@register
class S4Rec(ContrastiveSASRec):
    r"""SASRec encoder trained with five objectives: next item, online clustering, sequence contrast
    with prototype negatives, cluster-aware self-distillation and a head/tail adversary.

    Shapes: ``item_seq [B, L]``, ``item_seq_len [B]``; prototypes ``[K, d]``; ``forward -> [B, d]``.
    """

    loss_names = ("rec", "clust", "scl", "ckd", "adv")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.alpha, self.beta1 = number(config, "alpha"), number(config, "beta1")
        self.beta2, self.lmd = number(config, "beta2"), number(config, "lambda")
        self.tau1, self.tau2, self.tau3 = (number(config, k, 0, open_low=True) for k in ("tau1", "tau2", "tau3"))
        self.sinkhorn_eps = number(config, "sinkhorn_eps", 0, open_low=True)
        self.sinkhorn_iters = number(config, "sinkhorn_iters", 1, integer=True)
        uses_clusters = self.alpha > 0 or self.beta1 > 0 or self.beta2 > 0
        # K prototypes cannot be told apart by fewer sequences than K (checked only when they are used)
        self.n_clusters = number(config, "n_clusters", 2, len(training_lengths(dataset)) if uses_clusters
                                 else float("inf"), integer=True)
        if self.beta1 > 0 or self.alpha > 0:  # in-batch negatives / equal partition of the batch
            check_contrastive_batch(config)
        self.sim = choice(config, "sim", ("dot", "cos"))
        self.ckd_space = choice(config, "ckd_space", ("raw", "cos"))
        self.clustering = choice(config, "clustering", ("online", "kmeans"))
        self.read_kmeans_settings(config)

        self.prototypes = PrototypeLayer(self.n_clusters, self.hidden_size, self.initializer_range)
        self.register_buffer("centroids", torch.zeros(self.n_clusters, self.hidden_size))
        self.adversary = LengthAdversary(self.hidden_size, number(config, "grl_scale"))
        self.head_min_length = head_threshold(training_lengths(dataset), number(config, "head_ratio", 0, 1, open_low=True, open_high=True))

    def prototype_vectors(self):
        """``[K, d]`` cluster representatives: trainable prototypes (online) or the epoch's K-means centroids."""
        return self.prototypes.weight if self.clustering == "online" else self.centroids

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        rec, z = self.rec_and_embedding(interaction)
        zero = rec.new_zeros(())
        clust = scl = ckd = adv = zero
        need_views = self.beta1 > 0 or self.beta2 > 0
        need_assign = need_views or (self.alpha > 0 and self.clustering == "online")

        if need_assign:
            if self.clustering == "online":
                scores = self.prototypes(z)                                   # [B, K]
                targets = sinkhorn(scores, self.sinkhorn_eps, self.sinkhorn_iters, self.global_batch)
                assigned = targets.argmax(dim=1)                              # h(u), [B]
                if self.alpha > 0:
                    clust = self.alpha * swav_loss(scores, targets, self.tau1)
            else:
                assigned = self.nearest_prototype(z.detach())
        if need_views:
            protos = self.prototype_vectors()
            z1, z2 = self.views(item_seq, item_seq_len)
            if self.beta1 > 0:
                scl = self.beta1 * (info_nce(z1, z2, self.tau2, self.sim, protos, assigned, self.global_batch)
                                    + info_nce(z2, z1, self.tau2, self.sim, protos, assigned, self.global_batch))
            if self.beta2 > 0:
                teacher = protos[assigned]
                ckd = self.beta2 * (distill_kl(teacher, z1, self.tau3, self.ckd_space)
                                    + distill_kl(teacher, z2, self.tau3, self.ckd_space))
        if self.lmd > 0:
            adv = self.lmd * self.adversary.loss(z, self.own_lengths(interaction) >= self.head_min_length)
        return self.scaled(rec, clust, scl, ckd, adv)

    def own_lengths(self, interaction):
        """``[B]`` each sample's own length, uncapped: the loader's ``prefix_length`` field, else the input length
        (``item_length`` is capped at ``MAX_ITEM_LIST_LENGTH``, enough when the head threshold is below the cap)."""
        if PREFIX_LENGTH_FIELD in interaction:
            return interaction[PREFIX_LENGTH_FIELD]
        if self.head_min_length > self.max_seq_length:
            raise ValueError(f"head/tail labels: the head threshold ({self.head_min_length} items) exceeds "
                             f"MAX_ITEM_LIST_LENGTH={self.max_seq_length} and the batch has no {PREFIX_LENGTH_FIELD!r} "
                             "field (added by run_s4rec's data preparation)")
        return interaction[self.ITEM_SEQ_LEN]

    def nearest_prototype(self, z):
        """``[B]`` index of the most cosine-similar cluster representative of each embedding ``z`` ``[B, d]``."""
        return (F.normalize(z, dim=-1) @ F.normalize(self.prototype_vectors(), dim=-1).t()).argmax(1)

    @torch.no_grad()
    def assign_clusters(self, item_seq, item_seq_len):
        """``[B]`` cluster of each sequence: argmax prototype score (online) or nearest centroid (kmeans)."""
        return self.nearest_prototype(self.sequence_embedding(item_seq, item_seq_len))

    def on_epoch_start(self, trainer, train_data, epoch_idx):
        """``clustering: kmeans``: K-means over the embeddings of all training samples, once per epoch."""
        super().on_epoch_start(trainer, train_data, epoch_idx)
        if self.clustering == "kmeans" and (self.beta1 > 0 or self.beta2 > 0):
            self.centroids.copy_(self.kmeans_centroids(train_data._dataset, self.n_clusters, epoch_idx))
