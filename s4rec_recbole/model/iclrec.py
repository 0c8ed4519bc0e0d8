"""ICLRec (Chen et al., WWW 2022): SASRec + instance contrast + intent contrast with per-epoch K-means.

At the start of every epoch, K-means (faiss) over the mean-pooled embeddings of all training samples
gives K intents. In a step, each sequence's intent is the centroid nearest (L2) to its (detached)
embedding, L2-normalised as in ICLRec's reference code (``normalize_intents``); each augmented view is
contrasted with its sequence's intent, the other batch members' intents (and views) being the negatives,
and, as the reference's symmetric NCE loss does (``intent_symmetric``), each intent with its sequence's
view, the other views (and intents) being the negatives. Loss parts:
``(rec, cl_weight * L_instance, intent_weight * L_intent)``.
"""
import torch
import torch.nn.functional as F

from s4rec_recbole.layers import info_nce
from s4rec_recbole.model import register
from s4rec_recbole.data.loader import last_samples
from s4rec_recbole.model.base import ContrastiveSASRec, check_contrastive_batch, choice, number


@register
class ICLRec(ContrastiveSASRec):
    r"""SASRec + instance and intent contrastive learning. Centroids: buffer ``[K, d]``."""

    loss_names = ("rec", "instance", "intent")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.cl_weight = number(config, "cl_weight")
        self.intent_weight = number(config, "intent_weight")
        self.temperature = number(config, "cl_temperature", 0, open_low=True)
        self.sim = choice(config, "sim", ("dot", "cos"))
        # K-means runs over every training sample (each prefix of each training sequence; with
        # train_samples: sequence, each user's whole sequence)
        n_samples = len(last_samples(dataset)) if self.all_positions else len(dataset.inter_feat)
        self.n_clusters = number(config, "n_clusters", 2, n_samples, integer=True)
        if self.cl_weight > 0 or self.intent_weight > 0:
            check_contrastive_batch(config)
        self.read_kmeans_settings(config)
        self.intent_symmetric = bool(config["intent_symmetric"])
        self.normalize_intents = bool(config["normalize_intents"])
        self.register_buffer("centroids", torch.zeros(self.n_clusters, self.hidden_size))
        self.kmeans_epochs = []  # epochs whose centroids were recomputed (for tests and logs)

    def on_epoch_start(self, trainer, train_data, epoch_idx):
        """Recompute the intents: K-means over all training samples' sequence embeddings."""
        super().on_epoch_start(trainer, train_data, epoch_idx)
        if self.intent_weight > 0:
            self.centroids.copy_(self.kmeans_centroids(train_data._dataset, self.n_clusters, epoch_idx))
            self.kmeans_epochs.append(epoch_idx)

    def intent_ids(self, z):
        """``[B]`` index of the nearest centroid (L2, as faiss' index search) of each detached ``z``."""
        return torch.cdist(z.detach(), self.centroids).argmin(dim=1)

    def intents(self, z):
        """``[B, d]`` intent of each detached ``z``: its nearest centroid, L2-normalised with
        ``normalize_intents`` (the assignment itself uses the raw centroids)."""
        c = self.centroids[self.intent_ids(z)]
        return F.normalize(c, dim=1) if self.normalize_intents else c

    @torch.no_grad()
    def assign_clusters(self, item_seq, item_seq_len):
        """``[B]`` intent (cluster) of each sequence."""
        return self.intent_ids(self.sequence_embedding(item_seq, item_seq_len))

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        rec, z = self.rec_and_embedding(interaction)
        zero = rec.new_zeros(())
        if self.cl_weight == 0 and self.intent_weight == 0:
            return rec, zero, zero
        z1, z2 = self.views(item_seq, item_seq_len)
        instance = intent = zero
        if self.cl_weight > 0:
            instance = self.cl_weight * (info_nce(z1, z2, self.temperature, self.sim, global_batch=self.global_batch)
                                         + info_nce(z2, z1, self.temperature, self.sim, global_batch=self.global_batch)) / 2
        if self.intent_weight > 0:
            c = self.intents(z)
            intent = self.intent_weight * (self.intent_loss(z1, c) + self.intent_loss(z2, c)) / 2
        return self.scaled(rec, instance, intent)

    def intent_loss(self, view, c):
        """InfoNCE between the views ``[B, d]`` and their intents ``c`` ``[B, d]``: view-anchored, or with
        ``intent_symmetric`` the mean of the view- and the intent-anchored directions (gradient to the
        views only: the intents are fixed for the epoch)."""
        loss = info_nce(view, c, self.temperature, self.sim, global_batch=self.global_batch)
        if self.intent_symmetric:
            loss = (loss + info_nce(c, view, self.temperature, self.sim, global_batch=self.global_batch)) / 2
        return loss
