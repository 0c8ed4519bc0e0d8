"""How informative S4Rec's distillation teacher is: entropies of the teacher and student distributions.

The cluster-aware distillation (``L_ckd``) compares ``softmax(mu_h(u) / tau3)`` (the assigned prototype,
the teacher) with ``softmax(z / tau3)`` (a view's embedding, the student) over the d dimensions. This script
embeds every user's training sequence (history without its last two items, the validation and test targets)
with a trained checkpoint, assigns each to its most cosine-similar prototype (as the model does outside training,
where the batch's Sinkhorn targets decide), and prints for each temperature
the mean entropy and largest probability of teacher and student, beside the uniform distribution's entropy
ln d, and the mean KL(teacher || student). A teacher at the uniform entropy carries no cluster information.
Teacher and student are taken in the checkpoint's own ``ckd_space`` (``cos``: both L2-normalised first).

    python benchmarks/distill_diag.py saved/S4Rec-amazon-beauty-....pth --tau3=1.0,0.1
"""
import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s4rec_recbole.layers import distill_kl  # noqa: E402
from s4rec_recbole.recommend import RecommendError, Recommender  # noqa: E402


def entropy(p):
    """Mean entropy (nats) of the rows of ``p`` ``[N, d]``."""
    return float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())


@torch.no_grad()
def embed_training_sequences(rec, batch_size=1024):
    """``[N, d]`` sequence embeddings of every user with at least two training items."""
    seqs = [h[:-2] for h in rec.history.values() if len(h) >= 4]
    return torch.cat([rec.model.sequence_embedding(*rec.padded(seqs[i:i + batch_size]))
                      for i in range(0, len(seqs), batch_size)])


@torch.no_grad()
def diagnose(checkpoint, temperatures):
    rec = Recommender.from_checkpoint(checkpoint)
    model = rec.model
    if not hasattr(model, "nearest_prototype"):
        raise RecommendError(f"{checkpoint}: a {type(model).__name__} checkpoint; expected S4Rec (or a variant)")
    z = embed_training_sequences(rec)
    protos = model.prototype_vectors()
    assigned = model.nearest_prototype(z)
    space = model.ckd_space
    teacher, student = protos[assigned], z
    if space == "cos":  # what distill_kl compares in that space
        teacher, student = (torch.nn.functional.normalize(v, dim=-1) for v in (teacher, student))
    d = z.size(1)
    lines = [f"{checkpoint}: {len(z)} users, {int(assigned.unique().numel())} of {len(protos)} prototypes used; "
             f"mean norm: embedding {float(z.norm(dim=1).mean()):.2f}, prototype {float(protos.norm(dim=1).mean()):.2f}; "
             f"uniform entropy ln {d} = {math.log(d):.3f}; ckd_space {space}"]
    for t in temperatures:
        pt, ps = torch.softmax(teacher / t, -1), torch.softmax(student / t, -1)
        kl = float(distill_kl(protos[assigned], z, t, space))
        lines.append(f"tau3={t:g}: teacher entropy {entropy(pt):.3f}, max p {float(pt.max(1).values.mean()):.4f}; "
                     f"student entropy {entropy(ps):.3f}, max p {float(ps.max(1).values.mean()):.4f}; "
                     f"KL(teacher || student) {kl:.4f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="+", help="S4Rec checkpoint(s) written by training (saved/*.pth)")
    parser.add_argument("--tau3", default="1.0,0.1", help="comma-separated temperatures (default 1.0,0.1)")
    args = parser.parse_args(argv)
    try:
        temps = [float(t) for t in args.tau3.split(",")]
    except ValueError:
        parser.error(f"--tau3={args.tau3}: expected comma-separated positive numbers")
    if not temps or any(t <= 0 for t in temps):
        parser.error(f"--tau3={args.tau3}: expected comma-separated positive numbers")
    torch.set_num_threads(1)
    for ckpt in args.checkpoint:
        if not Path(ckpt).is_file():
            parser.error(f"{ckpt}: no such file; expected a checkpoint written by training (.pth)")
        try:
            print(diagnose(ckpt, temps))
        except RecommendError as e:
            parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
