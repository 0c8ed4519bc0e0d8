"""Dropout with a cheaper mask on CPU.

``torch.nn.Dropout`` draws its mask with ``bernoulli_``, which torch runs serially on the CPU; it was
~20% of an S4Rec training step here. :class:`FastDropout` draws the same Bernoulli(1 - p) keep mask
from ``rand_like(x) >= p`` (several times faster) and scales by ``1 / (1 - p)``, as ``nn.Dropout``
does: the same distribution of outputs and the same gradients given the mask, only other random numbers.
On any other device it is torch's own dropout: one fused kernel there, where the mask above would take five
(a GPU step is bound by kernel launches, see README "ML-1M on a lent GPU").
"""
import torch
from torch import nn


class FastDropout(nn.Module):
    """Drop-in replacement for ``nn.Dropout(p)``; ``forward(x [...]) -> [...]``."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability {p}: expected a number in [0, 1)")
        self.p = float(p)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, training=True)
        keep = (torch.rand_like(x) >= self.p).to(x.dtype)
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self):
        return f"p={self.p}"


def use_fast_dropout(module):
    """Replace every ``nn.Dropout`` inside ``module`` by :class:`FastDropout` with the same ``p``."""
    for name, child in module.named_children():
        if isinstance(child, nn.Dropout):
            setattr(module, name, FastDropout(child.p))
        else:
            use_fast_dropout(child)
    return module
