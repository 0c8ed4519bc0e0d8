"""torch.distributed helpers for the batch-coupled losses (no-ops without a process group).

With ``global_batch_negatives: true`` and several processes, the losses that couple the rows of a batch
see the global batch, as in SwAV / SimCLR: Sinkhorn-Knopp normalises over the prototype scores of every
rank, and InfoNCE takes its in-batch negatives from every rank. Gathered rows carry gradient only for
the local part (the other ranks' rows are constants here; their own ranks back-propagate through them).
"""
import torch
import torch.distributed as dist


def world():
    """``(rank, world size)`` of the default process group; ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def active(flag=True):
    """True when ``flag`` asks for global-batch semantics and more than one process runs."""
    return bool(flag) and world()[1] > 1


def all_reduce(tensor, op="sum"):
    """Sum (or max) of ``tensor`` over all ranks, in place and returned; identity without a group."""
    if world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor


def gather_rows(x, grad=True):
    """Rows of ``x`` ``[n_r, ...]`` of every rank concatenated in rank order, and the local offset.

    Ranks may hold different numbers of rows. With ``grad`` the local block is ``x`` itself, so the
    gradient reaches the local rows. Returns ``(all_rows [sum n_r, ...], offset of the local rows)``.
    """
    rank, size = world()
    if size == 1:
        return x, 0
    n = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(counts, n)
    counts = [int(c.item()) for c in counts]
    longest = max(counts)
    padded = x.detach()
    if x.shape[0] < longest:
        padded = torch.cat([padded, padded.new_zeros((longest - x.shape[0],) + tuple(x.shape[1:]))])
    blocks = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(blocks, padded.contiguous())
    blocks = [b[:c] for b, c in zip(blocks, counts)]
    if grad:
        blocks[rank] = x
    return torch.cat(blocks), sum(counts[:rank])


def shard(n):
    """This rank's contiguous slice of ``range(n)`` (rank order concatenates back to ``range(n)``)."""
    rank, size = world()
    return slice(rank * n // size, (rank + 1) * n // size)


def broadcast(tensor, src=0):
    """``tensor`` of rank ``src`` on every rank (in place)."""
    if world()[1] > 1:
        dist.broadcast(tensor, src)
    return tensor
