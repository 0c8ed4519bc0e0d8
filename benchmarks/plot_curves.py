"""Validation curves (score per epoch) of several runs in one PNG, for the README.

``python benchmarks/plot_curves.py --out=results/published/curves-beauty.png "S4Rec=RUN.json" "SASRec=A.log+B.log"``

Each ``LABEL=SOURCE[+SOURCE...]`` is one line of the plot. A source is a result JSON with a ``curve``
(written by the runner since the curve was added) or a RecBole log file (its ``epoch N evaluating
[..., valid_score: X]`` lines), so runs made before, or continued with ``--resume`` across several
logs, can be drawn too; a later source overrides an earlier one for the same epoch. The best epoch of
each line (the latest one on ties, the checkpoint RecBole keeps) is marked.
"""
import argparse
import json
import re
import sys
from pathlib import Path

EVAL_LINE = re.compile(r"epoch (\d+) evaluating \[.*valid_score: ([-+0-9.eE]+|nan|inf)\]")


class CurveError(ValueError):
    pass


def read_curve(path):
    """``{epoch: validation score}`` from a result JSON or a RecBole log."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CurveError(f"{path}: cannot read ({e})") from None
    if path.suffix == ".json":
        try:
            curve = json.loads(text).get("curve")
        except (ValueError, AttributeError):
            raise CurveError(f"{path}: not a result JSON") from None
        if not curve:
            raise CurveError(f"{path}: no 'curve' in this result (older run); give its log file instead")
        return {int(c["epoch"]): float(c["valid_score"]) for c in curve}
    points = {int(m.group(1)): float(m.group(2)) for m in EVAL_LINE.finditer(text)}
    if not points:
        raise CurveError(f"{path}: no 'epoch N evaluating [... valid_score: X]' lines; expected a RecBole log")
    return points


def parse_line(spec):
    label, sep, sources = spec.partition("=")
    if not sep or not label or not sources:
        raise CurveError(f"{spec!r}: expected LABEL=FILE[+FILE...]")
    points = {}
    for source in sources.split("+"):
        points.update(read_curve(source))
    return label, dict(sorted(points.items()))


def plot(lines, out, metric="validation NDCG@20", title=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in lines:
        epochs, scores = list(points), list(points.values())
        best = max(range(len(scores)), key=lambda i: (scores[i], i))  # latest on ties, as RecBole's early stopping
        (line,) = ax.plot(epochs, scores, label=f"{label} (best {scores[best]:.4f} at epoch {epochs[best]})")
        ax.plot([epochs[best]], [scores[best]], "o", color=line.get_color())
    return save_figure(fig, ax, "epoch (from 0, as in RecBole's log)", metric, out, title)


def save_figure(fig, ax, xlabel, ylabel, out, title=None):
    """Label, grid and legend ``ax``, then write ``fig`` to the PNG ``out`` through a temporary file."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("lines", nargs="+", metavar="LABEL=FILE[+FILE...]")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--title", default=None)
    parser.add_argument("--metric", default="validation NDCG@20", help="y-axis label")
    args = parser.parse_args(argv)
    try:
        lines = [parse_line(spec) for spec in args.lines]
    except CurveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {plot(lines, args.out, args.metric, args.title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
