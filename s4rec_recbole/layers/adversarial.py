"""Gradient reversal and the head/tail length adversary."""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def grad_reverse(x, scale=1.0):
    """Identity forward; the gradient is multiplied by ``-scale`` on the way back."""
    return _GradReverse.apply(x, float(scale))


def head_threshold(lengths, head_ratio=0.2):
    """Smallest length counted as head: the ``1 - head_ratio`` quantile of ``lengths`` (users' lengths)."""
    if not 0.0 < head_ratio < 1.0:
        raise ValueError(f"head_ratio={head_ratio}: expected a number in (0, 1)")
    return int(np.quantile(np.asarray(lengths), 1.0 - head_ratio, method="higher"))


class LengthAdversary(nn.Module):
    """Linear head/tail classifier behind a gradient-reversal layer.

    ``forward(z [B, d]) -> logits [B, 2]`` (class 1 = head); ``loss(z, is_head [B])`` is the
    cross-entropy. The classifier learns to tell head from tail; the encoder, through the reversed
    gradient, learns to make them indistinguishable.
    """

    def __init__(self, dim, grl_scale=1.0):
        super().__init__()
        self.grl_scale = float(grl_scale)
        self.classifier = nn.Linear(dim, 2)

    def forward(self, z):
        return self.classifier(grad_reverse(z, self.grl_scale))

    def loss(self, z, is_head):
        return F.cross_entropy(self(z), is_head.long())
