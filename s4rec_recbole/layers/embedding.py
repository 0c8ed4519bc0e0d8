"""Item embedding with a dedicated mask token."""
import torch
import torch.nn.functional as F
from torch import nn


class MaskableEmbedding(nn.Module):
    """Item embedding ``[n_items, d]`` (id 0 = padding) plus one vector for the mask token ``n_items``.

    ``weight`` keeps exactly ``n_items`` rows, so scoring all items (``z @ weight.T``) never scores the
    mask token. ``forward(ids [...]) -> [..., d]``.
    """

    def __init__(self, weight, init_std=0.02):
        super().__init__()
        self.weight = weight
        self.mask_token = weight.size(0)
        self.mask_weight = nn.Parameter(torch.randn(weight.size(1)) * init_std)

    @property
    def num_embeddings(self):
        return self.weight.size(0)

    def forward(self, ids):
        is_mask = ids == self.mask_token
        emb = F.embedding(ids.masked_fill(is_mask, 0), self.weight, padding_idx=0)
        return torch.where(is_mask.unsqueeze(-1), self.mask_weight, emb)
