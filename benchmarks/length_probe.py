"""How much head/tail length information a trained model's sequence embeddings carry.

S4Rec's adversary (a linear head/tail classifier behind gradient reversal) is meant to make long (head) and
short (tail) users indistinguishable in the encoder's output. This script embeds every user's training sequence
(history without its last two items, the validation and test targets) with a trained checkpoint, labels a user
head when that sequence is at least the head threshold long (the ``1 - head_ratio`` quantile of the users'
training lengths, as the runner sets it), and prints

- the ROC AUC of a fresh linear probe (logistic regression on standardised embeddings, stratified k-fold
  predictions, so every user is scored by a probe that did not see it): 0.5 = no length information that a
  linear model can read;
- for a model trained with its adversary (lambda > 0), the ROC AUC of the adversary's own classifier on the
  same embeddings.

    python benchmarks/length_probe.py saved/S4Rec-....pth saved/CL4SRec-....pth [--folds=5]
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s4rec_recbole.layers.adversarial import head_threshold  # noqa: E402
from s4rec_recbole.recommend import RecommendError, Recommender  # noqa: E402


@torch.no_grad()
def embed(rec, sequences, batch_size=1024):
    """``[N, d]`` embeddings of ``sequences`` (lists of item ids): the plugin models' sequence embedding,
    RecBole's ``forward`` output for its own models."""
    model = rec.model
    encode = getattr(model, "sequence_embedding", None) or model.forward
    return torch.cat([encode(*rec.padded(sequences[i:i + batch_size])) for i in range(0, len(sequences), batch_size)])


def probe_auc(z, is_head, folds=5, seed=0):
    """ROC AUC of out-of-fold logistic-regression scores of ``is_head`` from ``z``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(probe, z, is_head, cv=cv, method="decision_function")
    return float(roc_auc_score(is_head, scores))


def diagnose(checkpoint, folds=5, head_ratio=0.2):
    from sklearn.metrics import roc_auc_score

    rec = Recommender.from_checkpoint(checkpoint)
    sequences = [h[:-2] for h in rec.history.values() if len(h) >= 3]
    lengths = np.array([len(s) for s in sequences])
    threshold = head_threshold(lengths, head_ratio)
    is_head = lengths >= threshold
    if is_head.all() or not is_head.any():
        raise RecommendError(f"{checkpoint}: every user is on one side of the head threshold {threshold}; "
                             "expected both head and tail users")
    if is_head.sum() < folds or (~is_head).sum() < folds:
        raise RecommendError(f"{checkpoint}: fewer than --folds={folds} head or tail users; expected more users")
    z = embed(rec, sequences)
    line = (f"{checkpoint}: {type(rec.model).__name__}, {len(z)} users, head = training length >= {threshold} "
            f"({is_head.mean():.1%}); linear probe AUC {probe_auc(z.numpy(), is_head, folds):.3f}")
    adversary = getattr(rec.model, "adversary", None)
    if adversary is not None and getattr(rec.model, "lmd", 0) > 0:  # with lambda 0 it was never trained
        with torch.no_grad():
            logits = adversary.classifier(z)
        auc = roc_auc_score(is_head, (logits[:, 1] - logits[:, 0]).numpy())
        line += f", the adversary's own classifier AUC {auc:.3f}"
    return line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="+", help="checkpoint(s) written by training (saved/*.pth)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds of the probe (default 5)")
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error(f"--folds={args.folds}: expected an integer >= 2")
    torch.set_num_threads(1)
    for ckpt in args.checkpoint:
        if not Path(ckpt).is_file():
            parser.error(f"{ckpt}: no such file; expected a checkpoint written by training (.pth)")
        try:
            print(diagnose(ckpt, args.folds), flush=True)
        except RecommendError as e:
            parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
