"""The comparison table, t-tests and plots of ``run_s4rec.py --model=A,B --seeds=...`` from run files that
already exist (e.g. runs made in separate comparisons or folders, or before a configuration key was added).

``python benchmarks/report.py --dataset=amazon-beauty "S4Rec=results/runs/S4Rec-a.json,results/runs/S4Rec-b.json" "SR=..."``

Each ``LABEL=RUN.json[,RUN.json...]`` is one model (one file per seed: full run files with per-user ranks, as
under ``results/runs/``, or published ones whose ranks are in ``per-user/`` beside them); the first model is tested against each other one (paired t-test over users). Writes
``results/compare-<dataset>-<time>.md``, ``.csv`` and the two plots, as a comparison does.
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from publish_results import load_per_user  # noqa: E402
from s4rec_recbole.compare import report  # noqa: E402
from s4rec_recbole.runner import RESULTS_DIR  # noqa: E402


def load_runs(spec):
    label, sep, files = spec.partition("=")
    if not sep or not label or not files:
        raise ValueError(f"{spec!r}: expected LABEL=RUN.json[,RUN.json...]")
    runs = []
    for f in files.split(","):
        try:
            run = json.loads(Path(f).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{f}: cannot read a run JSON ({e})") from None
        if isinstance(run, dict) and not (run.get("per_user") or {}).get("rank"):
            run["per_user"] = load_per_user(f)
        if not isinstance(run, dict) or not (run.get("per_user") or {}).get("rank"):
            raise ValueError(f"{f}: no per-user ranks; expected a full run file (results/runs/*.json) or a "
                             "published one with its per-user/<name>.npz")
        runs.append(run)
    return label, runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("models", nargs="+", metavar="LABEL=RUN.json[,RUN.json...]")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--results_dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    try:
        results = dict(load_runs(spec) for spec in args.models)
        datasets = {r["dataset"] for runs in results.values() for r in runs}
        if datasets != {args.dataset}:
            raise ValueError(f"runs of {sorted(datasets)}; expected only --dataset={args.dataset}")
        users = {tuple(sorted(r["per_user"]["user"])) for runs in results.values() for r in runs}
        if len(users) != 1:
            raise ValueError("the runs were tested on different users; expected one split")
        report(results, args.dataset, args.results_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
