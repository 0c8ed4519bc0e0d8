"""Small reusable layers and losses (S4Rec, CL4SRec, ICLRec)."""
from s4rec_recbole.layers.adversarial import LengthAdversary, grad_reverse, head_threshold  # noqa: F401
from s4rec_recbole.layers.augment import OPERATORS, SequenceAugmenter  # noqa: F401
from s4rec_recbole.layers.cluster import PrototypeLayer, kmeans, sinkhorn, swav_loss  # noqa: F401
from s4rec_recbole.layers.contrastive import distill_kl, info_nce, similarity  # noqa: F401
from s4rec_recbole.layers.dropout import FastDropout, use_fast_dropout  # noqa: F401
from s4rec_recbole.layers.embedding import MaskableEmbedding  # noqa: F401
from s4rec_recbole.layers.gelu import use_fused_gelu  # noqa: F401
