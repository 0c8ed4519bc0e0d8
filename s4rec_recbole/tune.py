"""Hyperparameter search from a YAML space, selected on the validation metric only, resumable.

``python run_s4rec.py --tune=properties/hyper/S4Rec.yaml --dataset=amazon-beauty [--algo=grid|random|tpe]
[--max_trials=N] [--backend=local|ray] [--ray_address=HOST:PORT] [--key=value ...]``

A space file maps configuration keys to one distribution each::

    learning_rate: {loguniform: [1.0e-4, 1.0e-2]}   # log-uniform between the two values
    n_layers: {choice: [1, 2, 3]}                   # one of the listed values
    mask_ratio: {uniform: [0.1, 0.9]}               # uniform between the two values
    n_clusters: {quniform: [32, 512, 32]}           # uniform, rounded to a multiple of the step
    n_heads: {randint: [1, 4]}                      # integer in [low, high]

Every trial is one ordinary training run (``runner.run``) with the space's values as overrides. The
search is stored under ``results/tune-<model>-<dataset>-<algo>-<key>/`` (the key hashes everything the
command fixes except ``--max_trials``, ``--trials`` and ``--backend``): ``trials/trial-NNNN.json`` is written
atomically when a trial ends, so the same command run again after a kill continues with the trials that are
not there yet (a trial killed mid-training continues from its ``.last.pth``, as a comparison's runs do), and a
larger ``--max_trials`` extends a finished search. ``--trials=2,4`` (grid and random searches) runs only those
trial numbers, whose parameters are fixed before any training: a search split over machines or sessions is
merged by copying the parts' ``trials/`` records into one folder and running the command again (or while it runs:
the outputs are written from the records found when the command ends). Trials are
ranked by the validation metric (``valid_metric``) only; test metrics are shown for the chosen trial alone, at
the end.
Outputs: ``trials.csv`` (parameters, validation metrics, epochs and 1-based best epoch of every trial),
``best.yaml`` (a config file for ``--config_files``; its header says whether the best trial beats the finished
run of the model's current defaults with the trials' seed, found in ``results/runs/`` or ``results/published/``)
and ``best.json``.
"""
import csv
import hashlib
import io
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import yaml

from s4rec_recbole.compare import interrupted_run, run_key, stored_run
from s4rec_recbole.config import DATASET_DIR, ConfigError, read_yaml
from s4rec_recbole.data import prepare_dataset
from s4rec_recbole.data.prepare import atomic_write_text
from s4rec_recbole.runner import RESULTS_DIR, build_config, run
from s4rec_recbole.trainer import plain

ALGOS = ("grid", "random", "tpe")
BACKENDS = ("local", "ray")
# distribution -> (number of arguments, description for errors)
DISTRIBUTIONS = {
    "choice": (None, "a non-empty list of values"),
    "uniform": (2, "[low, high] with low < high"),
    "loguniform": (2, "[low, high] with 0 < low < high"),
    "quniform": (3, "[low, high, step] with low < high and step > 0"),
    "randint": (2, "[low, high] integers with low <= high"),
}
# Overrides that only say where things are, left out of the search key.
_LOCATION_KEYS = {"data_path", "checkpoint_dir", "show_progress", "state", "use_gpu", "gpu_id"}


def load_space(path, model, dataset, config_files=(), overrides=None):
    """Read and validate a space file: ``{key: (distribution, args)}``.

    Raises :class:`ConfigError` (one line, naming the file and the key) on a file that does not parse, a key
    the model does not know, a malformed distribution, or a value of the wrong type for the key.
    """
    raw = read_yaml(path)
    if not raw:
        raise ConfigError(f"search space {path}: empty; expected key: {{distribution: [args]}} lines")
    base = dict(overrides or {})
    known = build_config(model, dataset, config_files, base).known_keys
    space = {}
    for key, spec in raw.items():
        where = f"search space {path}, key {key!r}"
        if key not in known:
            raise ConfigError(f"{where}: not a configuration key of model {model}")
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(f"{where}: expected one distribution such as {{choice: [1, 2]}}, got {spec!r}")
        dist, args = next(iter(spec.items()))
        if dist not in DISTRIBUTIONS:
            raise ConfigError(f"{where}: unknown distribution {dist!r}; accepted: {', '.join(DISTRIBUTIONS)}")
        n_args, want = DISTRIBUTIONS[dist]
        bad = not isinstance(args, list) or not args or (n_args is not None and len(args) != n_args)
        if not bad and dist != "choice":
            bad = any(isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) for a in args)
        if not bad:
            if dist in ("uniform", "quniform"):
                bad = not args[0] < args[1] or (dist == "quniform" and args[2] <= 0)
            elif dist == "loguniform":
                bad = not 0 < args[0] < args[1]
            elif dist == "randint":
                bad = not (all(isinstance(a, int) for a in args) and args[0] <= args[1])
        if bad:
            raise ConfigError(f"{where}: {dist} needs {want}, got {args!r}")
        examples = args if dist == "choice" else args[:2]
        for value in examples:
            try:
                build_config(model, dataset, config_files, dict(base, **{key: value}))
            except ConfigError as e:
                raise ConfigError(f"{where}: value {value!r} rejected ({e})") from None
        space[key] = (dist, list(args))
    return space


def _cast(dist, args, value):
    """Plain Python value of a sample (hyperopt returns numpy floats)."""
    if dist == "choice":
        return value
    if dist == "randint" or (dist == "quniform" and all(isinstance(a, int) for a in args)):
        return int(round(float(value)))
    return float(value)


def hyperopt_space(space):
    from hyperopt import hp

    out = {}
    for key, (dist, args) in space.items():
        if dist == "choice":
            out[key] = hp.choice(key, args)
        elif dist == "uniform":
            out[key] = hp.uniform(key, *args)
        elif dist == "loguniform":
            out[key] = hp.loguniform(key, math.log(args[0]), math.log(args[1]))
        elif dist == "quniform":
            out[key] = hp.quniform(key, *args)
        else:
            out[key] = hp.quniform(key, args[0] - 0.5, args[1] + 0.5, 1)
    return out


def grid(space, path="search space"):
    """All combinations of a space made of ``choice`` only, in file order."""
    for key, (dist, _) in space.items():
        if dist != "choice":
            raise ConfigError(f"{path}, key {key!r}: --algo=grid needs choice for every key, got {dist}; "
                              "use --algo=random or --algo=tpe")
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k][1] for k in keys))]


def params_key(params):
    return json.dumps(plain(params), sort_keys=True)


def random_params(space, seed, index):
    """Trial ``index`` of a random search: a fixed draw per (seed, index), whatever ran before or where."""
    from hyperopt.pyll import stochastic

    sample = stochastic.sample(hyperopt_space(space), rng=np.random.RandomState([seed, index]))
    return {k: _cast(*space[k], sample[k]) for k in space}


def suggest(space, algo, history, n, seed, bigger=True):
    """The next ``n`` parameter sets of a ``tpe`` (or ``random``) search after the finished ``history``.

    hyperopt is given the finished trials as evaluated points (so a resumed search continues the same
    model of the space) and proposes ``n`` new ones; proposals of one wave are given the median loss so
    far (constant liar), so a parallel wave does not ask for the same point ``n`` times.
    Deterministic for a given history and seed.
    """
    from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, rand, tpe
    from hyperopt.fmin import generate_trials_to_calculate

    sign = -1.0 if bigger else 1.0
    losses = {params_key(h["params"]): sign * h["valid_score"] for h in history if h["status"] == "ok"}
    liar = float(np.median(list(losses.values()))) if losses else 0.0
    points = []
    for h in history:
        p = dict(h["params"])
        for key, (dist, args) in space.items():
            if dist == "choice":
                p[key] = args.index(p[key])
        points.append(p)
    trials = generate_trials_to_calculate(points) if points else Trials()
    trials.refresh()  # so that fmin counts the finished points towards max_evals
    seen, new = [0], []

    def objective(sample):
        params = {k: _cast(*space[k], v) for k, v in sample.items()}
        seen[0] += 1
        if seen[0] <= len(history):
            loss = losses.get(params_key(params))
            return {"status": STATUS_FAIL} if loss is None else {"status": STATUS_OK, "loss": loss}
        new.append(params)
        return {"status": STATUS_OK, "loss": liar}

    fmin(objective, hyperopt_space(space), algo=tpe.suggest if algo == "tpe" else rand.suggest,
         max_evals=len(history) + n, trials=trials, rstate=np.random.RandomState(seed + len(history)),
         show_progressbar=False, verbose=False)
    return new


class Study:
    """One search: its folder, the trial log and the settings every trial shares."""

    def __init__(self, space_file, model, dataset, algo="tpe", config_files=(), overrides=None, seed=2020,
                 results_dir=RESULTS_DIR):
        if algo not in ALGOS:
            raise ConfigError(f"--algo={algo}: expected one of {', '.join(ALGOS)}")
        self.space_file, self.model, self.dataset, self.algo = str(space_file), model, dataset, algo
        self.config_files, self.overrides = list(config_files), dict(overrides or {})
        self.space = load_space(space_file, model, dataset, self.config_files, self.overrides)
        self.grid = grid(self.space, f"search space {space_file}") if algo == "grid" else None
        config = build_config(model, dataset, self.config_files, self.overrides)
        # the model's current defaults (this command's settings without the searched values): the searched keys'
        # values and the run key a comparison would store them under
        self.defaults, self.defaults_key = {k: config[k] for k in self.space}, run_key(config)
        self.seed, self.metric = config["seed"], config["valid_metric"]
        self.bigger = bool(config["valid_metric_bigger"])
        fixed = {k: v for k, v in self.overrides.items() if k not in _LOCATION_KEYS}
        ident = {"model": model, "dataset": dataset, "algo": algo, "space": self.space, "overrides": fixed,
                 "config_files": {str(f): Path(f).read_text() for f in self.config_files}}
        key = hashlib.sha256(json.dumps(plain(ident), sort_keys=True).encode()).hexdigest()[:10]
        self.dir = Path(results_dir) / f"tune-{model}-{dataset}-{algo}-{key}"
        self.ident = ident

    # -- trial log ------------------------------------------------------------------------------------
    def trials(self):
        """Finished trials, by index."""
        folder = self.dir / "trials"
        return sorted((json.loads(p.read_text()) for p in folder.glob("trial-*.json")), key=lambda t: t["trial"]) \
            if folder.is_dir() else []

    def run_trial(self, index, params, results_dir=None):
        """Train one trial and store its record atomically; returns the record (failures are recorded)."""
        t0, earlier_s = time.time(), 0.0
        record = {"trial": index, "params": plain(params), "status": "ok", "error": None}
        overrides = dict(self.overrides, **params)
        try:
            resume = interrupted_run(build_config(self.model, self.dataset, self.config_files, overrides))
            if resume:
                print(f"trial {index + 1}: resuming the interrupted run {resume[0]} after epoch {resume[1]}")
            res = run(model=self.model, dataset=self.dataset, config_files=self.config_files,
                      overrides=overrides, results_dir=results_dir or self.dir / "runs",
                      result_name=f"trial-{index:04d}.json", show_test=False, resume=resume and str(resume[0]))
            record.update(valid=res["best_valid"], test=res["test"], valid_score=res["best_valid_score"],
                          epochs=res["epochs_run"], best_epoch=res.get("best_epoch"), checkpoint=res["checkpoint"],
                          resumed=bool(resume), stopped=res.get("stopped"))
            timings = res.get("timings") or {}
            if resume and timings.get("run"):  # the processes before the resume trained and validated too
                whole = timings["run"]["train_s"] + timings["run"]["valid_s"]
                earlier_s = max(0.0, whole - timings.get("fit_s", 0.0))
        except (ConfigError, FloatingPointError, ValueError, RuntimeError) as e:
            record.update(status="fail", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                          valid={}, test={}, valid_score=None, epochs=0, best_epoch=None, checkpoint=None)
        record["time_s"] = round(time.time() - t0 + earlier_s, 2)  # the whole trial, across resumes
        atomic_write_text(self.dir / "trials" / f"trial-{index:04d}.json", json.dumps(record, indent=1) + "\n")
        return record

    def params_at(self, index, history=()):
        """The parameters of trial ``index``.

        Grid and random searches fix them before any training. A tpe search draws them from the finished
        ``history`` and has no gaps, so ``index`` must be the trial after the last finished one.
        """
        if self.algo == "grid":
            return self.grid[index]
        if self.algo == "random":
            return random_params(self.space, self.seed, index)
        ((following, params),) = self.next_params(history, 1)
        if index != following:
            raise ValueError(f"tpe trial {index + 1} asked for, but the next trial after the history is "
                             f"{following + 1}")
        return params

    def next_params(self, history, n):
        """Up to ``n`` parameter sets to try next (grid and random: the lowest trials not done yet)."""
        if self.algo in ("grid", "random"):
            done = {t["trial"] for t in history}
            todo = (i for i in range(len(self.grid)) if i not in done) if self.grid is not None else \
                (i for i in itertools.count() if i not in done)
            return [(i, self.params_at(i)) for i in itertools.islice(todo, n)]
        start = max((t["trial"] for t in history), default=-1) + 1
        return list(enumerate(suggest(self.space, self.algo, history, n, self.seed, self.bigger), start=start))

    def best(self, history):
        ok = [t for t in history if t["status"] == "ok"]
        if not ok:
            return None
        return (max if self.bigger else min)(ok, key=lambda t: (t["valid_score"], -t["trial"]))

    def describe(self, t, total):
        params = " ".join(f"{k}={_short(v)}" for k, v in t["params"].items())
        if t["status"] != "ok":
            return f"[trial {t['trial'] + 1}/{total}] {params} -> failed: {t['error']}"
        cut = ", stopped by time_limit" if t.get("stopped") == "time_limit" else ""
        best = f", best {t['best_epoch']}" if t.get("best_epoch") else ""  # records before 2026-12-05 lack it
        return (f"[trial {t['trial'] + 1}/{total}] {params} -> valid {self.metric.lower()} {t['valid_score']:.4f} "
                f"({t['epochs']} epochs{best}, {t['time_s']:.0f} s{cut})")

    def defaults_run(self):
        """The model's current defaults, with the trials' seed, as a finished run of a comparison
        (``<results>/runs/``) or a published one (``<results>/published/``): ``(path, its record)``, or None
        when neither holds it."""
        prefix = f"{self.model}-{self.dataset}-seed{self.seed}-"
        for folder in (self.dir.parent / "runs", self.dir.parent / "published"):
            path = stored_run(folder, prefix, self.defaults_key)
            if path is not None:
                return path, json.loads(path.read_text())
        return None

    def verdict(self, best):
        """One line on the ``best`` trial against the model's current defaults, for the log and best.yaml, and
        the defaults' run found (its path, validation score and why it stopped) or None."""
        target = f"properties/dataset/{self.dataset}/{self.model}.yaml"
        if best["params"] == self.defaults:
            return "It is the model's current default here: its values are what the settings give already", None
        defaults = self.defaults_run()
        if defaults is None:
            return (f"The model's current defaults have no finished run with seed {self.seed} in "
                    f"{shown_path(self.dir.parent / 'runs')} or {shown_path(self.dir.parent / 'published')} "
                    f"(python run_s4rec.py --dataset={self.dataset} --model={self.model} --seeds={self.seed} trains "
                    f"one): compare on validation before copying this to {target}"), None
        path, record = defaults
        score = record["best_valid_score"]
        cut = ", cut short by time_limit" if record.get("stopped") == "time_limit" else ""
        seen = f"the model's current defaults (validation {self.metric} {score:.4f}, {shown_path(path)}{cut})"
        summary = {"run": str(shown_path(path)), "valid_score": score, "stopped": record.get("stopped")}
        if (best["valid_score"] > score) if self.bigger else (best["valid_score"] < score):
            return f"It beats {seen}: to make it the default here, copy it to {target}", summary
        return f"It does not beat {seen}: keep the defaults", summary

    # -- outputs ---------------------------------------------------------------------------------------
    def write_outputs(self, history, log=print, total=None):
        """``trials.csv``, ``best.yaml``, ``best.json``; prints the table sorted by the validation metric.
        With ``total`` (the search's size), trials not run yet (``--trials``) are named in the log and files."""
        ok = sorted((t for t in history if t["status"] == "ok"), key=lambda t: t["valid_score"], reverse=self.bigger)
        failed = [t for t in history if t["status"] != "ok"]
        keys = list(self.space)
        metrics = sorted({m for t in ok for m in t["valid"]})
        fields = ["trial", *keys, *[f"valid_{m}" for m in metrics], "epochs", "best_epoch", "stopped", "time_s",
                  "status", "error"]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        for t in ok + failed:
            row = {"trial": t["trial"] + 1, "epochs": t["epochs"], "best_epoch": t.get("best_epoch") or "",
                   "stopped": t.get("stopped") or "", "time_s": t["time_s"], "status": t["status"],
                   "error": t["error"] or ""}
            row.update({k: t["params"].get(k) for k in keys})
            row.update({f"valid_{m}": t["valid"].get(m) for m in metrics})
            writer.writerow(row)
        atomic_write_text(self.dir / "trials.csv", buf.getvalue())
        width = max([len(k) for k in keys] + [8])
        lines = [f"trials sorted by validation {self.metric} ({len(ok)} finished, {len(failed)} failed):",
                 "  ".join([f"{'trial':>5}", *[f"{k:>{width}}" for k in keys], f"{'valid':>8}", f"{'epochs':>6}"])]
        for t in ok:
            lines.append("  ".join([f"{t['trial'] + 1:>5}", *[f"{_short(t['params'][k]):>{width}}" for k in keys],
                                    f"{t['valid_score']:>8.4f}", f"{t['epochs']:>6}"]))
        done = {t["trial"] for t in history}
        missing = [i + 1 for i in range(total or 0) if i not in done]
        plural = "s" if len(missing) > 1 else ""
        pending = f"; trial{plural} {', '.join(map(str, missing))} of {total} not run yet" if missing else ""
        if pending:
            lines.append(f"only the finished trials are compared{pending}")
        log("\n".join(lines))
        best = self.best(history)
        if best is None:
            log("no trial finished; nothing selected")
            return None
        verdict, defaults = self.verdict(best)
        settings = {k: v for k, v in self.overrides.items() if k not in _LOCATION_KEYS and k != "seed"}
        settings.update(best["params"])
        header = (f"# Best of {len(ok)} trials ({self.algo} search over {self.space_file}) for {self.model} on "
                  f"{self.dataset}{pending},\n# chosen on validation {self.metric} = {best['valid_score']:.4f} (trial "
                  f"{best['trial'] + 1}). Test of this trial: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in best["test"].items())
                  + f".\n# Use: python run_s4rec.py --dataset={self.dataset} --model={self.model} "
                  f"--config_files={shown_path(self.dir / 'best.yaml')}\n# {verdict}\n")
        atomic_write_text(self.dir / "best.yaml", header + yaml.safe_dump(plain(settings), sort_keys=False))
        summary = {"model": self.model, "dataset": self.dataset, "algo": self.algo, "space_file": self.space_file,
                   "valid_metric": self.metric, "best_trial": best["trial"], "params": best["params"],
                   "valid": best["valid"], "test": best["test"], "checkpoint": best["checkpoint"],
                   "settings": plain(settings), "n_trials": len(history), "n_failed": len(failed),
                   "not_run": missing,
                   "defaults": defaults}
        atomic_write_text(self.dir / "best.json", json.dumps(summary, indent=2) + "\n")
        log(f"chosen: trial {best['trial'] + 1} (validation {self.metric} {best['valid_score']:.4f}); its test: "
            + ", ".join(f"{k} {v:.4f}" for k, v in best["test"].items()))
        log(verdict)
        log(f"wrote {self.dir / 'best.yaml'}, {self.dir / 'trials.csv'}, {self.dir / 'best.json'}")
        return summary


def shown_path(path):
    """``path`` relative to the working directory when it lies under it (so that a published file names no
    machine's folders), else absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _short(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def parse_trials(trials, algo, max_trials):
    """``--trials=2,4`` (1-based, as the progress lines number them) -> sorted 0-based indices."""
    if algo == "tpe":
        raise ConfigError("--trials: a tpe trial depends on the trials before it; use --algo=random or "
                          "--algo=grid to run chosen trials")
    items = [trials] if isinstance(trials, int) and not isinstance(trials, bool) else str(trials).split(",")
    out = set()
    for item in items:
        try:
            number = int(str(item).strip())
        except ValueError:
            number = 0
        if not 1 <= number <= max_trials:
            raise ConfigError(f"--trials={trials}: expected trial numbers between 1 and {max_trials} "
                              "(--max_trials), comma separated")
        out.add(number - 1)
    return sorted(out)


def tune(space_file, model, dataset, algo="tpe", max_trials=None, config_files=(), overrides=None, backend="local",
         ray_address=None, concurrency=None, cpus_per_trial=1, data_source=None, strict=False,
         results_dir=RESULTS_DIR, trials=None, log=print):
    """Run (or continue) a search and return the best trial's summary (None when no trial finished).

    ``trials`` (grid and random searches only) runs just those trial numbers (1-based), e.g. one per
    machine; copying the ``trials/`` records of every part into one folder merges them.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend={backend}: expected one of {', '.join(BACKENDS)}")
    overrides = dict(overrides or {})
    prepare_dataset(dataset, overrides.get("data_path", str(DATASET_DIR)), data_source=data_source, strict=strict)
    study = Study(space_file, model, dataset, algo, config_files, overrides, results_dir=results_dir)
    if max_trials is None:
        max_trials = len(study.grid) if study.grid is not None else 20
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ConfigError(f"--max_trials={max_trials}: expected a positive integer")
    if study.grid is not None:
        max_trials = min(max_trials, len(study.grid))
    wanted = parse_trials(trials, algo, max_trials) if trials is not None else None
    if backend != "local" and trials is not None:
        raise ConfigError("--trials runs chosen trials one after another; drop --backend=ray")
    study.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study.dir / "search.json", json.dumps(plain(study.ident), indent=2) + "\n")
    history = study.trials()
    log(f"search {study.dir}: {len(history)} of {max_trials} trials already done, "
        f"selecting on validation {study.metric}")
    for t in history:
        log(study.describe(t, max_trials))
    if backend == "local":
        done = {t["trial"] for t in history}
        for index in [i for i in (range(max_trials) if wanted is None else wanted) if i not in done]:
            record = study.run_trial(index, study.params_at(index, history))
            history.append(record)
            log(study.describe(record, max_trials) + _best_so_far(study, history))
    else:
        from s4rec_recbole.tune_ray import run_waves

        run_waves(study, history, max_trials, ray_address, concurrency, cpus_per_trial, log)
    # read the records again: a part of the same search run elsewhere (--trials) may have added some meanwhile
    return study.write_outputs(study.trials(), log, total=max_trials)


def _best_so_far(study, history):
    best = study.best(history)
    return "" if best is None else f"; best so far {best['valid_score']:.4f} (trial {best['trial'] + 1})"
