"""Copy run results into ``results/published/`` without their per-user arrays, for the README's tables.

``python benchmarks/publish_results.py results/runs/S4Rec-amazon-beauty-seed2020-....json [...]``

Each copy keeps the metrics (test, validation, head/tail), protocol, timings, epochs and the resolved
configuration: what a README cell needs to be checked; the per-user ranks (about 1 MB per Beauty run)
stay in the local ``results/`` folder. A result under RecBole's protocol (history not masked, e.g. from
``--evaluate=... --mask_history=False``) is published as ``unmasked-<name>``, beside the masked one of the same run.
"""
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from s4rec_recbole.data.prepare import atomic_write_text  # noqa: E402
from s4rec_recbole.trainer import best_epoch  # noqa: E402

OUT = REPO / "results" / "published"


def slim(result):
    out = {k: v for k, v in result.items() if k not in ("per_user", "result_file")}
    out["n_users"] = len(result.get("per_user", {}).get("user", []))
    curve = result.get("curve") or []
    if "epochs_this_process" not in out and curve:  # written before epochs_run counted the epochs before a resume
        out["epochs_this_process"], out["epochs_run"] = out.get("epochs_run"), len(curve)
    if curve:  # recomputed: runs written before best_epoch took the latest of tied epochs named the first
        out["best_epoch"] = best_epoch(curve)
    return out


def main(paths):
    if not paths:
        print(__doc__.strip().splitlines()[2])
        return 2
    for p in map(Path, paths):
        try:
            result = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            print(f"error: {p}: cannot read a result JSON ({e})", file=sys.stderr)
            return 2
        unmasked = (result.get("protocol") or {}).get("mask_history") is False
        target = OUT / ("unmasked-" + p.name if unmasked and not p.name.startswith("unmasked-") else p.name)
        atomic_write_text(target, json.dumps(slim(result), indent=1) + "\n")
        print(f"{p} -> {target} ({target.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
