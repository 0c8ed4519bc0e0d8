"""CL4SRec (Xie et al., ICDE 2022): SASRec + symmetric in-batch InfoNCE between two augmented views.

The views are made from a copy of the batch (the augmentations never modify their input), so the
next-item loss always sees the original sequences, unlike the public RecBole-DA version.
Loss parts: ``(rec, cl_weight * L_cl)`` with ``L_cl = (l(z1, z2) + l(z2, z1)) / 2`` (NT-Xent over 2B).
"""
from s4rec_recbole.layers import info_nce
from s4rec_recbole.model import register
from s4rec_recbole.model.base import ContrastiveSASRec, check_contrastive_batch, choice, number


@register
class CL4SRec(ContrastiveSASRec):
    r"""SASRec + sequence-level contrastive learning. Shapes as :class:`ContrastiveSASRec`."""

    loss_names = ("rec", "cl")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.cl_weight = number(config, "cl_weight")
        self.cl_temperature = number(config, "cl_temperature", 0, open_low=True)
        self.sim = choice(config, "sim", ("dot", "cos"))
        if self.cl_weight > 0:
            check_contrastive_batch(config)

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        rec = self.rec_and_embedding(interaction)[0]
        if self.cl_weight == 0:
            return rec, rec.new_zeros(())
        z1, z2 = self.views(item_seq, item_seq_len)
        cl = (info_nce(z1, z2, self.cl_temperature, self.sim, global_batch=self.global_batch)
              + info_nce(z2, z1, self.cl_temperature, self.sim, global_batch=self.global_batch)) / 2
        return self.scaled(rec, self.cl_weight * cl)
