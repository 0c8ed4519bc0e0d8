"""Test metrics against one setting (e.g. the number of prototypes K): a Markdown table and a PNG.

``python benchmarks/plot_sweep.py --key=n_clusters --out=results/published/ksweep-amazon-beauty
--reference="paper HR@5=32:0.0510,64:0.0508,128:0.0519,256:0.0481,512:0.0455" results/runs/S4Rec-*.json``

Each run JSON (written by ``run_s4rec.py``) is placed by the value of ``--key`` in its stored configuration;
runs with the same value (seeds) are averaged, with their standard deviation. Every run must share the model
and dataset, and differ from the others only in ``--key`` and the seed, so the sweep moves one thing. A
``--reference`` (``LABEL=VALUE:SCORE,...``, repeatable) draws published numbers beside ours, on its own axis
when its metric is not one of ours. Writes ``OUT.md`` and ``OUT.png`` (through temporary files).
"""
import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from plot_curves import save_figure  # noqa: E402
from s4rec_recbole.compare import VOLATILE, without_neutral  # noqa: E402
from s4rec_recbole.data.prepare import atomic_write_text  # noqa: E402
from s4rec_recbole.trainer import best_epoch  # noqa: E402

METRICS = ("hit@5", "hit@20", "ndcg@5", "ndcg@20")
NAMES = {"hit@5": "HR@5", "hit@20": "HR@20", "ndcg@5": "NDCG@5", "ndcg@20": "NDCG@20"}


class SweepError(ValueError):
    pass


def read_run(path, key):
    """(value of ``key``, the run's other settings, test metrics, "epochs (best epoch)", seed) of one result
    JSON; the epochs come from its validation curve where it has one (a resumed run's epochs_run may count only
    the epochs of its last process)."""
    path = Path(path)
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        config, test = run["config"], run["test"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise SweepError(f"{path}: not a result JSON of run_s4rec.py ({type(e).__name__}: {e})") from None
    if key not in config:
        raise SweepError(f"{path}: its configuration has no key {key!r}")
    missing = [m for m in METRICS if m not in test]
    if missing:
        raise SweepError(f"{path}: test metrics lack {', '.join(missing)}")
    rest = {k: v for k, v in without_neutral(config).items() if k not in VOLATILE and k not in (key, "seed")}
    curve = run.get("curve") or []
    epochs = f"{len(curve)} ({best_epoch(curve)})" if curve else str(run.get("epochs_run", "?"))
    return config[key], rest, test, epochs, config.get("seed")


def collect(paths, key):
    """``{value: [(test, epochs, seed), ...]}`` sorted by value; every run must share all other settings."""
    if not paths:
        raise SweepError("no run files given")
    groups, first = {}, None
    for path in paths:
        value, rest, test, epochs, seed = read_run(path, key)
        if first is None:
            first = (path, rest)
        elif rest != first[1]:
            diff = sorted(k for k in set(rest) | set(first[1]) if rest.get(k) != first[1].get(k))
            raise SweepError(f"{path} differs from {first[0]} in more than {key!r} and the seed: "
                             f"{', '.join(diff[:5])}")
        runs = groups.setdefault(value, [])
        if any(seed == s for _, _, s in runs):
            raise SweepError(f"{path}: a second run with {key}={value} and seed {seed}")
        runs.append((test, epochs, seed))
    return dict(sorted(groups.items()))


def parse_reference(spec):
    """``LABEL=VALUE:SCORE,...`` -> (label, {value: score}); values are read as numbers where they are."""
    label, sep, points = spec.partition("=")
    if not sep or not label or not points:
        raise SweepError(f"--reference {spec!r}: expected LABEL=VALUE:SCORE[,VALUE:SCORE...]")
    out = {}
    for item in points.split(","):
        value, sep, score = item.partition(":")
        try:
            value = json.loads(value)
            out[value] = float(score)
        except ValueError:
            raise SweepError(f"--reference {spec!r}: {item!r} is not VALUE:SCORE with a numeric score") from None
    return label, out


def stats(values):
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def table(groups, key, references=()):
    """Markdown: one row per value of ``key`` (mean +- std over seeds, best in bold), a column per reference."""
    head = f"| {key} | seeds | " + " | ".join(NAMES[m] for m in METRICS) + " | epochs (best) |"
    head += "".join(f" {label} |" for label, _ in references)
    lines = [head, "|" + "---|" * (len(METRICS) + 3 + len(references))]
    best = {m: max(stats([t[m] for t, _, _ in runs])[0] for runs in groups.values()) for m in METRICS}
    for value, runs in groups.items():
        cells = []
        for m in METRICS:
            mean, std = stats([t[m] for t, _, _ in runs])
            cell = f"{mean:.4f}" + (f" +- {std:.4f}" if len(runs) > 1 else "")
            cells.append(f"**{cell}**" if mean == best[m] and len(groups) > 1 else cell)
        seeds = ", ".join(str(s) for _, _, s in runs)
        epochs = ", ".join(str(e) for _, e, _ in runs)
        refs = "".join(f" {points[value]:.4f} |" if value in points else " |" for _, points in references)
        lines.append(f"| {value} | {seeds} | " + " | ".join(cells) + f" | {epochs} |" + refs)
    return "\n".join(lines) + "\n"


def plot(groups, key, out, references=(), title=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = list(groups)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = values if numeric else list(range(len(values)))
    fig, ax = plt.subplots(figsize=(7, 4))
    for m in METRICS:
        means, stds = zip(*(stats([t[m] for t, _, _ in runs]) for runs in groups.values()))
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=f"{NAMES[m]} (ours)")
    for label, points in references:
        rx = [p if numeric else values.index(p) for p in points if numeric or p in values]
        ry = [s for p, s in points.items() if numeric or p in values]
        ax.plot(rx, ry, "k--", marker="s", label=label)
    ticks, log = x_axis(values, references) if numeric else (xs, False)
    if log:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(v) for v in (ticks if numeric else values)])
    return save_figure(fig, ax, key, "test metric", out, title)


def x_axis(values, references=()):
    """(ticks, log scale?) of a numeric sweep: every value of ours and of the references gets a tick, and the
    axis is logarithmic (base 2) when all are positive and span a factor of 8 or more (K = 32 ... 512)."""
    ticks = sorted(set(values).union(*({p for p in points if isinstance(p, (int, float))} for _, points in references)))
    return ticks, ticks[0] > 0 and ticks[-1] / ticks[0] >= 8


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN.json")
    parser.add_argument("--key", required=True, help="configuration key that the sweep varies, e.g. n_clusters")
    parser.add_argument("--out", required=True, help="output path without suffix; writes OUT.md and OUT.png")
    parser.add_argument("--reference", action="append", default=[], metavar="LABEL=VALUE:SCORE,...")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    try:
        groups = collect(args.runs, args.key)
        references = [parse_reference(r) for r in args.reference]
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    text = table(groups, args.key, references)
    plot(groups, args.key, out.with_suffix(".png"), references, args.title)
    atomic_write_text(out.with_suffix(".md"), text)
    print(text, end="")
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
