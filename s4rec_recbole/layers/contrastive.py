"""Contrastive and distillation losses shared by S4Rec, CL4SRec and ICLRec."""
import torch
import torch.nn.functional as F

from s4rec_recbole.layers.distributed import active, gather_rows


def similarity(a, b, sim="dot"):
    """``[N, d] x [M, d] -> [N, M]`` dot products (``sim='dot'``) or cosines (``sim='cos'``)."""
    if sim == "cos":
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    elif sim != "dot":
        raise ValueError(f"sim={sim!r}: expected 'dot' or 'cos'")
    return a @ b.t()


def info_nce(anchor, positive, temperature=1.0, sim="dot", extra_negatives=None, exclude=None, global_batch=False):
    """One direction of the in-batch InfoNCE (NT-Xent) with optional extra negatives.

    For row u: ``-log exp(s(a_u, p_u)/t) / (sum_n exp(s(a_u, p_n)/t) + sum_{n != u} exp(s(a_u, a_n)/t)
    + sum_{k != exclude_u} exp(s(a_u, e_k)/t))``: the other 2B-2 views of the batch are negatives.

    Args:
        anchor, positive: ``[B, d]`` the two views.
        extra_negatives: optional ``[K, d]`` shared negatives (S4Rec: the prototypes).
        exclude: optional ``[B]`` long, index of the extra negative to leave out for each row
            (S4Rec: the row's assigned prototype).
        global_batch: with several processes, the in-batch views of every rank are negatives (gathered;
            gradient to the local rows only): the loss of the local rows then equals a single process's
            loss on those rows within the global batch.

    Returns: scalar, mean over the (local) batch.
    """
    B = anchor.size(0)
    all_anchor, all_positive, offset = anchor, positive, 0
    if active(global_batch):
        all_anchor, offset = gather_rows(anchor)
        all_positive, _ = gather_rows(positive)
    rows = torch.arange(B, device=anchor.device)
    self_mask = torch.zeros(B, all_anchor.size(0), dtype=torch.bool, device=anchor.device)
    self_mask[rows, offset + rows] = True
    ap = similarity(anchor, all_positive, sim) / temperature                                   # [B, N]
    aa = similarity(anchor, all_anchor, sim).masked_fill(self_mask, float("-inf")) / temperature  # [B, N]
    logits = [ap, aa]
    if extra_negatives is not None:
        ae = similarity(anchor, extra_negatives, sim) / temperature                     # [B, K]
        if exclude is not None:
            ae = ae.scatter(1, exclude.view(-1, 1), float("-inf"))
        logits.append(ae)
    logits = torch.cat(logits, dim=1)
    return F.cross_entropy(logits, offset + rows)


def distill_kl(teacher, student, temperature=1.0, space="raw"):
    """Dimension-wise distillation ``KL(softmax(teacher/t) || softmax(student/t))``, batch mean.

    ``teacher`` and ``student`` are ``[B, d]``; the teacher is detached (no gradient reaches it).
    ``space='cos'`` L2-normalises both rows first, so that teacher and student are compared on one scale
    (S4Rec's prototypes are trained through cosine scores and keep a far smaller norm than the embeddings,
    which makes the raw teacher distribution almost uniform).
    """
    if space == "cos":
        teacher, student = F.normalize(teacher, dim=-1), F.normalize(student, dim=-1)
    elif space != "raw":
        raise ValueError(f"space={space!r}: expected 'raw' or 'cos'")
    t = F.log_softmax(teacher.detach() / temperature, dim=-1)
    s = F.log_softmax(student / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(dim=-1).mean()
