"""Batched sequence augmentations (Crop, Mask, Reorder, Insert) on right-padded item sequences.

All operators take ``seq`` ``[B, L]`` (long, item ids left-aligned, 0 = padding after the items) and
``lengths`` ``[B]`` (long, >= 1) and return a new ``(seq [B, L], lengths [B])``: the input tensors are
never modified, no per-sequence Python loop runs, everything stays on the input's device, and no
output sequence is empty. ``generator`` (a ``torch.Generator`` on the same device) makes them
reproducible.
"""
import torch
from torch import nn

OPERATORS = ("crop", "mask", "reorder", "insert")


def _positions(seq):
    return torch.arange(seq.size(1), device=seq.device).unsqueeze(0)  # [1, L]


def _rand(shape, like, generator):
    return torch.rand(shape, device=like.device, generator=generator)


def _randint_upto(high, generator):
    """Uniform integers in [0, high] (inclusive), elementwise for a long tensor ``high`` [B]."""
    return (_rand(high.shape, high, generator) * (high + 1).float()).long().clamp_max(high)


def crop(seq, lengths, ratio, generator=None):
    """Keep one contiguous block of ``max(1, floor(ratio * n))`` items, moved to the front."""
    keep = torch.clamp((ratio * lengths.float()).floor().long(), min=1)
    keep = torch.minimum(keep, lengths)
    start = _randint_upto(lengths - keep, generator)
    pos = _positions(seq)
    src = (start.unsqueeze(1) + pos).clamp_max(seq.size(1) - 1)
    out = seq.gather(1, src).masked_fill(pos >= keep.unsqueeze(1), 0)
    return out, keep


def mask(seq, lengths, ratio, mask_token, generator=None):
    """Replace ``floor(ratio * n)`` distinct random positions among the n items by ``mask_token``."""
    n_mask = (ratio * lengths.float()).floor().long()
    pos = _positions(seq)
    keys = _rand(seq.shape, seq, generator).masked_fill(pos >= lengths.unsqueeze(1), 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    chosen = rank < n_mask.unsqueeze(1)
    return seq.masked_fill(chosen, mask_token), lengths.clone()


def reorder(seq, lengths, ratio, generator=None):
    """Shuffle one contiguous block of ``floor(ratio * n)`` items; everything else stays in place."""
    span = (ratio * lengths.float()).floor().long()
    start = _randint_upto(lengths - span, generator)
    pos = _positions(seq)
    inside = (pos >= start.unsqueeze(1)) & (pos < (start + span).unsqueeze(1))
    # Keys inside the block lie in [start, start + span), outside they are the positions themselves,
    # so sorting by key permutes the block only.
    keys = torch.where(inside, start.unsqueeze(1) + _rand(seq.shape, seq, generator) * span.unsqueeze(1),
                       pos.float())
    return seq.gather(1, keys.argsort(dim=1)), lengths.clone()


def insert(seq, lengths, ratio, item_sampler, generator=None):
    """Insert ``floor(ratio * n)`` items drawn by ``item_sampler(count)`` at random positions.

    The result is truncated to ``L`` keeping the most recent items.
    """
    B, L = seq.shape
    n_ins = (ratio * lengths.float()).floor().long()
    total = lengths + n_ins
    width = L + int(n_ins.max().item()) if B else L
    pos = torch.arange(width, device=seq.device).unsqueeze(0)
    # Choose which of the n + k output slots hold inserted items (uniform over all arrangements).
    keys = _rand((B, width), seq, generator).masked_fill(pos >= total.unsqueeze(1), 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    inserted = rank < n_ins.unsqueeze(1)
    src = (torch.cumsum(~inserted, dim=1) - 1).clamp(0, L - 1)
    original = seq.gather(1, src)
    sampled = item_sampler(B * width).view(B, width)
    out = torch.where(inserted, sampled, original).masked_fill(pos >= total.unsqueeze(1), 0)
    shift = (total - L).clamp_min(0)
    out = out.gather(1, (shift.unsqueeze(1) + torch.arange(L, device=seq.device).unsqueeze(0)).clamp_max(width - 1))
    new_len = total.clamp_max(L)
    out = out.masked_fill(torch.arange(L, device=seq.device).unsqueeze(0) >= new_len.unsqueeze(1), 0)
    return out, new_len


class SequenceAugmenter(nn.Module):
    """Makes one augmented view per sequence, its operator drawn uniformly from ``operators``.

    Args:
        n_items: number of item ids (RecBole's ``n_items``); the mask token is ``n_items``.
        operators: subset of ``("crop", "mask", "reorder", "insert")``.
        crop_ratio, mask_ratio, reorder_ratio, insert_ratio: the operators' ratios.
        item_freq: ``[n_items]`` training frequency of each item, used by Insert (id 0 must be 0).

    ``forward(seq [B, L], lengths [B]) -> (view [B, L], view_lengths [B])``.
    """

    OPERATORS = OPERATORS

    def __init__(self, n_items, operators=OPERATORS, crop_ratio=0.2, mask_ratio=0.7, reorder_ratio=0.2,
                 insert_ratio=0.2, item_freq=None):
        super().__init__()
        unknown = [op for op in operators if op not in OPERATORS]
        if unknown or not operators:
            raise ValueError(f"augmentation operators {list(operators)}: expected a non-empty subset of {list(OPERATORS)}")
        for name, value in (("crop_ratio", crop_ratio), ("mask_ratio", mask_ratio),
                            ("reorder_ratio", reorder_ratio), ("insert_ratio", insert_ratio)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name}={value}: expected a number in [0, 1]")
        self.n_items = n_items
        self.mask_token = n_items
        self.operators = tuple(operators)
        self.crop_ratio, self.mask_ratio = float(crop_ratio), float(mask_ratio)
        self.reorder_ratio, self.insert_ratio = float(reorder_ratio), float(insert_ratio)
        if item_freq is None:
            item_freq = torch.ones(n_items)
            item_freq[0] = 0
        item_freq = torch.as_tensor(item_freq, dtype=torch.float)
        if item_freq.shape != (n_items,) or item_freq.sum() <= 0:
            raise ValueError(f"item_freq: expected {n_items} non-negative counts with a positive sum")
        self.register_buffer("item_prob", item_freq / item_freq.sum(), persistent=False)

    def sample_items(self, count, generator=None):
        """``count`` item ids drawn from the training item frequency."""
        return torch.multinomial(self.item_prob, count, replacement=True, generator=generator)

    def apply_operator(self, name, seq, lengths, generator=None):
        if name == "crop":
            return crop(seq, lengths, self.crop_ratio, generator)
        if name == "mask":
            return mask(seq, lengths, self.mask_ratio, self.mask_token, generator)
        if name == "reorder":
            return reorder(seq, lengths, self.reorder_ratio, generator)
        return insert(seq, lengths, self.insert_ratio, lambda n: self.sample_items(n, generator), generator)

    def forward(self, seq, lengths, generator=None):
        choice = (_rand(lengths.shape, lengths, generator) * len(self.operators)).long()
        choice = choice.clamp_max(len(self.operators) - 1)
        out, out_len = torch.empty_like(seq), torch.empty_like(lengths)
        for i, name in enumerate(self.operators):
            rows = (choice == i).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            v, vl = self.apply_operator(name, seq.index_select(0, rows), lengths.index_select(0, rows), generator)
            out[rows], out_len[rows] = v, vl
        return out, out_len
