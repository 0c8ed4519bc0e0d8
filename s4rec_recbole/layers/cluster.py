"""Prototypes with Sinkhorn-Knopp equal-partition targets (SwAV), and K-means for the offline variants."""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from s4rec_recbole.layers.distributed import active, all_reduce


@torch.no_grad()
def sinkhorn(scores, eps=0.05, n_iters=3, global_batch=False):
    """Equal-partition soft assignments of a batch to prototypes.

    Args:
        scores: ``[B, K]`` similarities (no gradient flows through the result).
        eps: entropic regularisation; ``exp(scores / eps)`` is the starting transport plan.
        n_iters: alternating normalisations (each: prototypes to mass 1/K, then samples to 1/B).
        global_batch: with several processes, normalise over the rows of every rank (the global batch):
            the maximum, the total mass, the per-prototype sums and B are all-reduced. The local rows of
            the result equal those of a single process given all ranks' rows.

    Returns:
        ``[B, K]`` targets whose rows sum to 1 and whose columns sum to about ``B / K``.
    """
    scores = scores.detach().float()
    B, K = scores.shape
    dist_on = active(global_batch)
    reduce = all_reduce if dist_on else (lambda t, op="sum": t)
    if dist_on:
        B = int(reduce(torch.tensor([B], device=scores.device)).item())
    q = torch.exp((scores - reduce(scores.max().reshape(1), "max")) / eps)
    q = q / reduce(q.sum().reshape(1))
    for _ in range(n_iters):
        q = q / reduce(q.sum(dim=0, keepdim=True)) / K
        q = q / q.sum(dim=1, keepdim=True) / B
    return q * B


class PrototypeLayer(nn.Module):
    """K trainable prototypes; cosine scores between sequence embeddings and prototypes.

    ``forward(z [B, d]) -> scores [B, K]`` in [-1, 1]; ``weight`` is ``[K, d]``.
    """

    def __init__(self, n_prototypes, dim, init_std=0.02):
        super().__init__()
        if n_prototypes < 1:
            raise ValueError(f"n_clusters={n_prototypes}: expected a positive integer")
        self.weight = nn.Parameter(torch.randn(n_prototypes, dim) * init_std)

    def forward(self, z):
        return F.normalize(z, dim=-1) @ F.normalize(self.weight, dim=-1).t()


def swav_loss(scores, targets, temperature):
    """Cross-entropy of ``softmax(scores / temperature)`` against ``targets`` ``[B, K]``, batch mean."""
    return -(targets * F.log_softmax(scores / temperature, dim=-1)).sum(dim=-1).mean()


def kmeans(x, k, n_iters=20, seed=2020, n_redo=1, max_points_per_centroid=256):
    """K-means centroids ``[k, d]`` of ``x`` ``[N, d]`` with faiss (CPU), returned on ``x``'s device.

    ``n_redo`` runs (seeds ``seed``, then faiss' next ones) keep the centroids of the lowest objective; each run
    trains on at most ``max_points_per_centroid * k`` points drawn from ``x`` (all of them if there are fewer).
    The defaults are faiss'; ICLRec's reference code uses 5 runs and 4096 points per centroid.
    """
    import faiss

    data = np.ascontiguousarray(x.detach().float().cpu().numpy())
    if len(data) < k:
        raise ValueError(f"K-means with K={k} needs at least {k} points, got {len(data)}")
    km = faiss.Kmeans(data.shape[1], k, niter=n_iters, seed=seed, nredo=n_redo,
                      max_points_per_centroid=max_points_per_centroid, verbose=False)
    km.train(data)
    return torch.from_numpy(km.centroids).to(x.device)
