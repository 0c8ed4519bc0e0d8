"""Copy run results into ``results/published/`` without their per-user arrays, for the README's tables.

``python benchmarks/publish_results.py results/runs/S4Rec-amazon-beauty-seed2020-....json [...]``

Each copy keeps the metrics (test, validation, head/tail), protocol, timings, epochs and the resolved
configuration: what a README cell needs to be checked. The per-user arrays (user, rank of the test item,
training length, cluster; about 1 MB of JSON per Beauty run) go to ``results/published/per-user/<name>.npz``
(compressed, ~100 KB), from which ``benchmarks/report.py`` redoes the paired tests and the head/tail intervals
of published runs. A result under RecBole's protocol (history not masked, e.g. from
``--evaluate=... --mask_history=False``) is published as ``unmasked-<name>``, beside the masked one of the same run.

``python benchmarks/publish_results.py results/tune-<model>-<dataset>-<algo>-<key>/`` publishes a search: its trial
records (``trial-NNNN.json``), ``trials.csv``, ``best.json``, ``best.yaml`` (its ``Use:`` line pointing at the
published copy) and ``search.json`` go to ``results/published/<the search folder's name>/``. Trials published earlier
stay; when some of them are not in the search folder, nothing is written: the folder's ``trials.csv`` and ``best.*``
would not cover them (copy them into its ``trials/`` and run the search command again first); likewise when
``best.json`` covers fewer trials than ``trials/`` holds.
"""
import io
import json
import re
import sys
from pathlib import Path

import numpy as np

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


def per_user_file(published):
    """Where the per-user arrays of the published run file ``published`` are kept."""
    published = Path(published)
    return published.parent / "per-user" / (published.stem + ".npz")


def save_per_user(per_user, target):
    """Write ``per_user`` (lists ``user``, ``rank``, ``length`` and optionally ``cluster``) as compressed arrays,
    sorted by user, beside the published file ``target``; atomically."""
    order = np.argsort(np.asarray(per_user["user"]), kind="stable")
    arrays = {}
    for key in ("user", "rank", "length", "cluster"):
        values = per_user.get(key)
        if values is not None:
            values = np.asarray(values, dtype=np.int64)[order]
            small = values.size == 0 or (values.min() >= 0 and values.max() < 2 ** 16)
            arrays[key] = values.astype(np.uint16 if small and key != "user" else np.int32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    out = per_user_file(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out)
    return out


def load_per_user(published):
    """The per-user arrays of a published run file as lists (``cluster`` None if absent), or None."""
    path = per_user_file(published)
    if not path.is_file():
        return None
    with np.load(path) as arrays:
        out = {key: arrays[key].astype(np.int64).tolist() for key in arrays.files}
    out.setdefault("cluster", None)
    return out


def publish_search(folder):
    """Copy the search in ``folder`` to ``OUT / folder.name`` (see the module docstring); returns the target."""
    records = sorted((folder / "trials").glob("trial-*.json"))
    missing = [f for f in ("search.json", "trials.csv", "best.json", "best.yaml") if not (folder / f).is_file()]
    if not records or missing:
        raise ValueError(f"{folder}: expected a finished search (trials/trial-NNNN.json, search.json, trials.csv, "
                         f"best.json, best.yaml); missing {', '.join(missing) or 'trials/trial-NNNN.json'}")
    try:
        covered = json.loads((folder / "best.json").read_text()).get("n_trials")
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{folder / 'best.json'}: expected a JSON object with n_trials ({e})") from None
    if covered != len(records):
        raise ValueError(f"{folder}: best.json covers {covered} trials, trials/ holds {len(records)}: run the search "
                         "command again so that trials.csv and best.* cover every record")
    target = OUT / folder.name
    ours = {p.name for p in records}
    only_published = sorted(p.name for p in target.glob("trial-*.json") if p.name not in ours)
    if only_published:
        raise ValueError(f"{target} holds {', '.join(only_published)}, which {folder / 'trials'} lacks: copy them "
                         "there and run the search command again, so that trials.csv and best.* cover them")
    target.mkdir(parents=True, exist_ok=True)
    for path in records + [folder / f for f in ("search.json", "trials.csv", "best.json")]:
        atomic_write_text(target / path.name, path.read_text())
    shown = target.relative_to(REPO) if target.is_relative_to(REPO) else target
    best = re.sub(r"--config_files=\S*best\.yaml", f"--config_files={shown / 'best.yaml'}",
                  (folder / "best.yaml").read_text())
    atomic_write_text(target / "best.yaml", best)
    return target


def published_name(name, protocol):
    """The file name under ``results/published/`` of the run file ``name`` whose ``protocol`` is given: ``unmasked-``
    in front for a run under RecBole's protocol (history not masked)."""
    unmasked = (protocol or {}).get("mask_history") is False
    return "unmasked-" + name if unmasked and not name.startswith("unmasked-") else name


def main(paths):
    if not paths:
        print(__doc__.strip().splitlines()[2])
        return 2
    for p in map(Path, paths):
        if p.is_dir():
            try:
                target = publish_search(p)
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            print(f"{p} -> {target} ({len(list(target.glob('trial-*.json')))} trial records)")
            continue
        try:
            result = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            print(f"error: {p}: cannot read a result JSON ({e})", file=sys.stderr)
            return 2
        target = OUT / published_name(p.name, result.get("protocol"))
        atomic_write_text(target, json.dumps(slim(result), indent=1) + "\n")
        print(f"{p} -> {target} ({target.stat().st_size // 1024} KB)")
        if (result.get("per_user") or {}).get("rank"):
            arrays = save_per_user(result["per_user"], target)
            print(f"  per-user ranks -> {arrays} ({arrays.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
