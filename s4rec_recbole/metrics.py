"""Per-user ranking metrics and the head/tail split (for comparisons and significance tests)."""
import numpy as np


def per_user_metrics(ranks, topk=(5, 10, 20)):
    """``{'hit@k': [N], 'ndcg@k': [N]}`` from 0-based target ranks ``[N]`` (one target per user)."""
    ranks = np.asarray(ranks)
    out = {}
    for k in topk:
        hit = ranks < k
        out[f"hit@{k}"] = hit.astype(float)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    return out


def summarize(ranks, lengths, head_min_length, topk=(5, 10, 20)):
    """Mean metrics ``{'overall': {...}, 'head': {...}, 'tail': {...}}`` and user counts."""
    per_user = per_user_metrics(ranks, topk)
    head = np.asarray(lengths) >= head_min_length
    groups = {"overall": np.ones_like(head), "head": head, "tail": ~head}
    out = {g: {m: float(v[mask].mean()) if mask.any() else float("nan") for m, v in per_user.items()}
           for g, mask in groups.items()}
    out["users"] = {g: int(mask.sum()) for g, mask in groups.items()}
    return out
