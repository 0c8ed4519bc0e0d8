"""Contrastive and distillation losses shared by S4Rec, CL4SRec and ICLRec."""
import torch
import torch.nn.functional as F


def similarity(a, b, sim="dot"):
    """``[N, d] x [M, d] -> [N, M]`` dot products (``sim='dot'``) or cosines (``sim='cos'``)."""
    if sim == "cos":
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    elif sim != "dot":
        raise ValueError(f"sim={sim!r}: expected 'dot' or 'cos'")
    return a @ b.t()


def info_nce(anchor, positive, temperature=1.0, sim="dot", extra_negatives=None, exclude=None):
    """One direction of the in-batch InfoNCE (NT-Xent) with optional extra negatives.

    For row u: ``-log exp(s(a_u, p_u)/t) / (sum_n exp(s(a_u, p_n)/t) + sum_{n != u} exp(s(a_u, a_n)/t)
    + sum_{k != exclude_u} exp(s(a_u, e_k)/t))``: the other 2B-2 views of the batch are negatives.

    Args:
        anchor, positive: ``[B, d]`` the two views.
        extra_negatives: optional ``[K, d]`` shared negatives (S4Rec: the prototypes).
        exclude: optional ``[B]`` long, index of the extra negative to leave out for each row
            (S4Rec: the row's assigned prototype).

    Returns: scalar, mean over the batch.
    """
    B = anchor.size(0)
    eye = torch.eye(B, dtype=torch.bool, device=anchor.device)
    ap = similarity(anchor, positive, sim) / temperature                              # [B, B]
    aa = similarity(anchor, anchor, sim).masked_fill(eye, float("-inf")) / temperature  # [B, B]
    logits = [ap, aa]
    if extra_negatives is not None:
        ae = similarity(anchor, extra_negatives, sim) / temperature                     # [B, K]
        if exclude is not None:
            ae = ae.scatter(1, exclude.view(-1, 1), float("-inf"))
        logits.append(ae)
    logits = torch.cat(logits, dim=1)
    return F.cross_entropy(logits, torch.arange(B, device=anchor.device))


def distill_kl(teacher, student, temperature=1.0):
    """Dimension-wise distillation ``KL(softmax(teacher/t) || softmax(student/t))``, batch mean.

    ``teacher`` and ``student`` are ``[B, d]``; the teacher is detached (no gradient reaches it).
    """
    t = F.log_softmax(teacher.detach() / temperature, dim=-1)
    s = F.log_softmax(student / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(dim=-1).mean()
