"""Side-by-side comparison of several models on the identical split and protocol.

``python run_s4rec.py --dataset=amazon-beauty --model=SASRec,CL4SRec,ICLRec,S4Rec --seeds=1,2,3``

Every (model, seed) run is stored as ``results/runs/<model>-<dataset>-seed<seed>-<config hash>.json``;
a run whose file exists is reused, not retrained, so an interrupted comparison resumes where it stopped; a
run that was killed mid-training continues from its ``saved/*.last.pth`` (same configuration, same random
state), so a long comparison can span several sessions by re-running the same command. A run that
``--time_limit`` stopped is not finished: the same command continues it from its ``.last.pth``, under this
or any other limit.
The table (Markdown and CSV) gives test HR/NDCG@5/10/20 overall, on head users (the longest
``head_ratio`` of training sequences) and on tail users, as mean +- std over seeds, marks the best model
per column, and adds the ratio of the first model's mean to each other one's (from unrounded means), a
paired t-test over users of the first model against each other one, and the first
model's relative gain over each other one on tail and on head users with a stratified bootstrap interval of
their difference (the paper's claim: the gain is larger on tail users).
"""
import csv
import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from s4rec_recbole.config import DATASET_DIR, ConfigError  # noqa: F401
from s4rec_recbole.data import prepare_dataset
from s4rec_recbole.data.loader import TRIM_SAFE_MODELS
from s4rec_recbole.data.prepare import atomic_write_text
from s4rec_recbole.metrics import per_user_metrics
from s4rec_recbole.runner import RESULTS_DIR, build_config, run
from s4rec_recbole.trainer import load_checkpoint, plain

GROUPS = ("overall", "head", "tail")
N_BOOT = 2000  # bootstrap resamples of the tail-vs-head interval
# Settings that do not change what a run computes (beyond float rounding), left out of the resume key.
# time_limit only decides where a process stops: a run it stopped continues under any other limit.
VOLATILE = {"checkpoint_dir", "show_progress", "state", "gpu_id", "use_gpu", "device", "worker", "log_wandb",
            "eval_batch_size", "data_path", "config_files", "fused_gelu", "time_limit"}


def without_neutral(settings):
    """``settings`` less the keys, added to the project after runs were recorded, whose value there leaves
    the computation as it was before the key existed; so results and checkpoints from before still match."""
    out = dict(settings)
    if out.get("aux_warmup") == 0:  # no warm-up
        out.pop("aux_warmup")
    if out.get("train_samples") == "prefix":  # RecBole's one sample per prefix
        out.pop("train_samples")
    if out.get("ckd_space") == "raw":  # S4Rec: the paper's distillation on the raw vectors
        out.pop("ckd_space")
    if out.get("single_spec", True):  # one process: nothing to gather
        out.pop("global_batch_negatives", None)
    if not (out.get("trim_padding") and out.get("model") in TRIM_SAFE_MODELS):  # RecBole's padded batches
        out.pop("trim_padding", None)
    if (out.get("model") != "ICLRec" and out.get("clustering") != "kmeans") or \
            (out.get("kmeans_redo"), out.get("kmeans_max_points_per_centroid")) == (1, 256):  # none / faiss' defaults
        out.pop("kmeans_redo", None)
        out.pop("kmeans_max_points_per_centroid", None)
    for key in ("intent_symmetric", "normalize_intents"):  # ICLRec: false is the intent loss before the key
        if out.get(key) is False:
            out.pop(key)
    return out


def run_key(config):
    """Short hash of everything in the resolved configuration (a Config or a checkpoint's stored config
    dict) that affects the result."""
    settings = config if isinstance(config, dict) else plain(config.final_config_dict)
    settings = {k: v for k, v in without_neutral(settings).items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def stored_run(runs_dir, prefix, key):
    """The finished run ``<prefix><key>.json``, or one of ``<prefix>*.json`` whose stored configuration has
    this key (a file named under an earlier form of the key), or None."""
    exact = runs_dir / f"{prefix}{key}.json"
    if exact.is_file():
        return exact
    for path in sorted(runs_dir.glob(f"{prefix}*.json")):
        try:
            config = json.loads(path.read_text()).get("config")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(config, dict) and run_key(config) == key:
            return path
    return None


def interrupted_run(config):
    """The ``.last.pth`` of an unfinished run with exactly this configuration (the furthest one if
    several), or None. A run that early stopping or the epoch limit ended is not resumed."""
    key, best = run_key(config), None
    for path in Path(config["checkpoint_dir"]).glob(f"*-{config['dataset']}-*.last.pth"):
        try:
            checkpoint = load_checkpoint(path)
        except Exception:  # unreadable or foreign file: not ours to resume
            continue
        if not isinstance(checkpoint, dict) or run_key(checkpoint.get("config") or {}) != key:
            continue
        stopped = checkpoint["cur_step"] > config["stopping_step"] or checkpoint["epoch"] + 1 >= config["epochs"]
        if not stopped and (best is None or checkpoint["epoch"] > best[1]):
            best = (path, checkpoint["epoch"])
    return best


def split_overrides(models, dataset, overrides):
    """Per model, the overrides it knows: a key may belong to some models only (``n_clusters``), but
    a key that no compared model knows is an error."""
    known = {m: build_config(m, dataset, overrides={"data_path": overrides.get("data_path", str(DATASET_DIR))}).known_keys
             for m in models}
    for key in overrides:
        if not any(key in k for k in known.values()):
            build_config(models[0], dataset, overrides={key: overrides[key]})  # raises the usual one-line error
    return {m: {k: v for k, v in overrides.items() if k in known[m]} for m in models}


def load_or_run(model, dataset, seed, config_files, overrides, runs_dir, log=print):
    """The stored result of this exact run, or a new run (stored atomically when it finishes)."""
    over = dict(overrides, seed=seed)
    config = build_config(model, dataset, config_files, over)
    key = run_key(config)
    name = f"{model}-{dataset}-seed{seed}-{key}.json"
    path = stored_run(Path(runs_dir), f"{model}-{dataset}-seed{seed}-", key)
    stored = json.loads(path.read_text()) if path else None
    if stored and stored.get("stopped") != "time_limit":
        log(f"reusing {path}")
        return stored
    resume = interrupted_run(config)  # also the .last.pth of a run that time_limit stopped
    if stored and not resume:
        log(f"reusing {path}: time_limit stopped it and its .last.pth is not in {config['checkpoint_dir']}")
        return stored
    if resume:
        log(f"resuming the interrupted run {resume[0]} after epoch {resume[1]}")
    return run(model=model, dataset=dataset, config_files=config_files, overrides=over,
               results_dir=runs_dir, result_name=name, resume=resume and str(resume[0]))


def metric_names(topk):
    return [f"{m}@{k}" for m in ("hit", "ndcg") for k in topk]


def aggregate(runs, topk):
    """``{group: {metric: (mean, std)}}`` over the seeds of one model."""
    out = {}
    for g in GROUPS:
        out[g] = {}
        for m in metric_names(topk):
            values = np.array([r["test_by_group"][g][m] for r in runs])
            out[g][m] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
    return out


def user_metric(runs, metric, topk):
    """Per-user ``metric`` averaged over seeds, indexed by user id (all runs share the same users)."""
    per_seed = []
    for r in runs:
        order = np.argsort(r["per_user"]["user"])
        per_seed.append(per_user_metrics(np.asarray(r["per_user"]["rank"])[order], topk)[metric])
    return np.mean(per_seed, axis=0)


def paired_tests(results, topk):
    """p-values of a paired t-test over users, first model against each other one, per metric."""
    models = list(results)
    first = models[0]
    out = {}
    for other in models[1:]:
        out[other] = {}
        for m in metric_names(topk):
            a, b = user_metric(results[first], m, topk), user_metric(results[other], m, topk)
            out[other][m] = float(stats.ttest_rel(a, b).pvalue) if np.any(a != b) else 1.0
    return out


def tail_head_gains(results, topk, n_boot=N_BOOT, seed=0, chunk=100):
    """Relative gain of the first model over each other one on tail and on head users (ratio of the group's
    mean per-user metric, averaged over seeds, minus 1) and ``tail - head`` with a 95% percentile interval and
    a two-sided p-value from a bootstrap over users, resampled within each group and paired across models.

    Returns ``{other: {metric: {"tail", "head", "diff", "low", "high", "p"}}}``; ``{}`` when a group is empty.
    """
    models = list(results)
    run0 = results[models[0]][0]
    order = np.argsort(run0["per_user"]["user"])
    head = np.asarray(run0["per_user"]["length"])[order] >= run0["head_min_length"]
    if head.all() or not head.any() or len(models) < 2:
        return {}
    metrics = metric_names(topk)
    columns = [(m, met) for m in models for met in metrics]
    per_user = np.stack([user_metric(results[m], met, topk) for m, met in columns], axis=1)   # [N, C]
    rng = np.random.default_rng(seed)
    means, boot = {}, {}
    for group, mask in (("tail", ~head), ("head", head)):
        x = per_user[mask]
        n = len(x)
        means[group] = x.mean(0)
        draws = []
        for start in range(0, n_boot, chunk):
            c = min(chunk, n_boot - start)
            idx = rng.integers(0, n, (c, n)) + np.arange(c)[:, None] * n
            counts = np.bincount(idx.ravel(), minlength=c * n).reshape(c, n)
            draws.append(counts @ x / n)                                # [c, C] resampled group means
        boot[group] = np.concatenate(draws)
    col = {k: i for i, k in enumerate(columns)}
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for other in models[1:]:
            out[other] = {}
            for met in metrics:
                a, b = col[(models[0], met)], col[(other, met)]
                gain = {g: means[g][a] / means[g][b] - 1 for g in ("tail", "head")}
                diff = (boot["tail"][:, a] / boot["tail"][:, b]) - (boot["head"][:, a] / boot["head"][:, b])
                diff = diff[np.isfinite(diff)]
                low, high = np.percentile(diff, [2.5, 97.5]) if len(diff) else (np.nan, np.nan)
                p = min(1.0, 2 * min(np.mean(diff <= 0), np.mean(diff >= 0))) if len(diff) else np.nan
                out[other][met] = {"tail": float(gain["tail"]), "head": float(gain["head"]),
                                   "diff": float(gain["tail"] - gain["head"]), "low": float(low),
                                   "high": float(high), "p": float(p)}
    return out


def gains_markdown(gains, first, topk):
    shown = [f"{m}@{k}" for m in ("hit", "ndcg") for k in sorted({min(topk), max(topk)})]
    md = ["", f"Tail vs head users: relative gain of {first} over each model (group mean, per-user metric averaged "
          f"over seeds) and tail - head with a 95% bootstrap interval ({N_BOOT} resamples of users within each "
          "group; p two-sided, 0 = below 1/resamples):", "",
          "| vs | metric | tail gain | head gain | tail - head [95% interval] | p |", "|---|---|---|---|---|---|"]
    fmt = lambda v: f"{100 * v:+.1f}%"   # noqa: E731
    for other, per_metric in gains.items():
        for met in shown:
            g = per_metric[met]
            md.append(f"| {other} | {met} | {fmt(g['tail'])} | {fmt(g['head'])} | {fmt(g['diff'])} "
                      f"[{fmt(g['low'])}, {fmt(g['high'])}] | {g['p']:.3g} |")
    return md


def head_rates(run):
    """Fraction of head users in each non-empty cluster of a run (``None`` without clusters)."""
    pu = run["per_user"]
    if pu.get("cluster") is None:
        return None
    cluster = np.asarray(pu["cluster"])
    head = np.asarray(pu["length"]) >= run["head_min_length"]
    return [float(head[cluster == c].mean()) for c in np.unique(cluster)]


def cluster_mixing(run):
    """How much a run's clusters sort test users by length (``None`` without clusters).

    ``spread`` is the size-weighted standard deviation of the per-cluster head fraction around the
    overall one, ``p``; small clusters can reach 0 or 1 by chance, so it is set against ``random``, its
    root-mean-square value when the same users are dealt at random into clusters of the same sizes,
    ``sqrt(p (1 - p) (K - 1) / (N - 1))`` for K non-empty clusters and N users (exact, hypergeometric).
    ``ratio`` = spread / random is 1 for clusters as mixed as chance and grows as clusters separate
    head from tail users; ``p_value`` is the chi-square test of independence of cluster and head/tail
    (statistic ``N spread^2 / (p (1 - p))``, K - 1 degrees of freedom)."""
    pu = run.get("per_user") or {}
    if pu.get("cluster") is None:
        return None
    cluster = np.asarray(pu["cluster"])
    head = (np.asarray(pu["length"]) >= run["head_min_length"]).astype(float)
    if cluster.shape != head.shape or cluster.ndim != 1:
        raise ValueError(f"per-user cluster {cluster.shape} and length {head.shape}: expected two equal 1-d arrays")
    n, share = len(head), head.mean()
    _, index = np.unique(cluster, return_inverse=True)
    sizes, heads = np.bincount(index), np.bincount(index, weights=head)
    k = len(sizes)
    spread = float(np.sqrt(np.sum(sizes * (heads / sizes - share) ** 2) / n))
    var = share * (1 - share)
    random = float(np.sqrt(var * (k - 1) / (n - 1))) if n > 1 else 0.0
    out = {"clusters": k, "users": n, "head_share": float(share), "spread": spread, "random": random}
    if var == 0 or k < 2:  # every user head (or tail), or one cluster: nothing to sort
        return {**out, "ratio": float("nan"), "p_value": 1.0}
    return {**out, "ratio": spread / random, "p_value": float(stats.chi2.sf(n * spread ** 2 / var, k - 1))}


def mixing_markdown(results):
    """Markdown lines of the cluster-mixing table (mean over a model's seeds; the largest p)."""
    mixing = {m: [x for x in map(cluster_mixing, runs) if x] for m, runs in results.items()}
    mixing = {m: v for m, v in mixing.items() if v}
    if not mixing:
        return [], {}
    md = ["", "Clusters vs user length (test users; mean over seeds): size-weighted std of the head fraction per "
          "cluster (spread), its value when users are dealt into clusters of the same sizes at random, their ratio "
          "(1: as mixed as chance) and the chi-square test of cluster x head/tail independence (largest p over seeds)",
          "", "| model | clusters | head share | spread | random | ratio | p |", "|---|---|---|---|---|---|---|"]
    summary = {}
    for model, xs in mixing.items():
        s = {key: float(np.mean([x[key] for x in xs])) for key in ("clusters", "head_share", "spread", "random",
                                                                    "ratio")}
        s["p_value"] = max(x["p_value"] for x in xs)
        summary[model] = s
        md.append(f"| {model} | {s['clusters']:.0f} | {s['head_share']:.3f} | {s['spread']:.3f} | {s['random']:.3f} "
                  f"| {s['ratio']:.2f} | {s['p_value']:.2g} |")
    return md, summary


def ratio(a, b):
    """``a / b``; NaN when ``b`` is 0 (a model that never hit)."""
    return a / b if b else float("nan")


def tables(results, topk, tests, protocol, gains=None):
    """Markdown table text and CSV rows."""
    agg = {m: aggregate(r, topk) for m, r in results.items()}
    metrics = metric_names(topk)
    best = {(g, m): max(agg, key=lambda model: agg[model][g][m][0]) for g in GROUPS for m in metrics}
    first = list(results)[0]
    users = next(iter(results.values()))[0]["test_by_group"]["users"]
    head_min = next(iter(results.values()))[0]["head_min_length"]
    md = [f"Test metrics ({protocol}); mean +- std over seeds (one seed: the value); **bold** = best per column.", "",
          f"Users: {users['overall']} overall, {users['head']} head (training length >= {head_min}), "
          f"{users['tail']} tail."]
    for g in GROUPS:
        md += ["", f"**{g}**", "", "| model | seeds | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 2)]
        for model, r in results.items():
            cells = []
            for m in metrics:
                mean, std = agg[model][g][m]
                text = f"{mean:.4f} +- {std:.4f}" if len(r) > 1 else f"{mean:.4f}"
                cells.append(f"**{text}**" if best[(g, m)] == model else text)
            md.append(f"| {model} | {len(r)} | " + " | ".join(cells) + " |")
    rows = []
    for model, r in results.items():
        row = {"model": model, "seeds": len(r)}
        for g in GROUPS:
            for m in metrics:
                row[f"{g} {m} mean"], row[f"{g} {m} std"] = agg[model][g][m]
        if model in tests:
            for m in metrics:
                row[f"p {m}"] = tests[model][m]
        if model != first:
            for m in metrics:
                row[f"ratio {m}"] = ratio(agg[first]["overall"][m][0], agg[model]["overall"][m][0])
        for m, g in (gains or {}).get(model, {}).items():
            row[f"tail gain {m}"], row[f"head gain {m}"] = g["tail"], g["head"]
            row[f"tail-head {m} low"], row[f"tail-head {m} high"], row[f"tail-head p {m}"] = g["low"], g["high"], g["p"]
        rows.append(row)
    if tests:
        md += ["", f"Paired t-test over users (overall, per-user metric averaged over seeds): p-value of {first} vs",
               "", "| model | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
        md += [f"| {other} | " + " | ".join(f"{tests[other][m]:.2e}" for m in metrics) + " |" for other in tests]
    if len(results) > 1:
        md += ["", f"Ratio of {first}'s overall mean to each model's (means over seeds, unrounded; > 1: {first} higher)",
               "", "| model | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
        md += [f"| {row['model']} | " + " | ".join(f"{row[f'ratio {m}']:.3f}" for m in metrics) + " |"
               for row in rows if row["model"] != first]
    if gains:
        md += gains_markdown(gains, first, topk)
    mixing_md, mixing = mixing_markdown(results)
    md += mixing_md
    for row in rows:
        for key, value in mixing.get(row["model"], {}).items():
            row[f"cluster {key}"] = value
    return "\n".join(md) + "\n", rows


def plots(results, topk, prefix):
    """Fig. 3 (per-cluster head rate boxplot) and Fig. 4 (head/tail bars) as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    rates = {m: sum((head_rates(r) or [] for r in runs), []) for m, runs in results.items()}
    rates = {m: v for m, v in rates.items() if v}
    if rates:
        fig, ax = plt.subplots(figsize=(1.6 * len(rates) + 2, 4))
        ax.boxplot(list(rates.values()))
        ax.set_xticks(range(1, len(rates) + 1), list(rates))
        ax.set_ylabel("fraction of head users per cluster")
        ax.set_title("Head users per cluster (test users)")
        path = Path(f"{prefix}-cluster-head-rate.png")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    metric = f"hit@{min(topk)}"
    agg = {m: aggregate(r, topk) for m, r in results.items()}
    fig, ax = plt.subplots(figsize=(1.6 * len(agg) + 2, 4))
    width = 0.38
    x = np.arange(len(agg))
    for i, g in enumerate(("head", "tail")):
        ax.bar(x + (i - 0.5) * width, [agg[m][g][metric][0] for m in agg], width,
               yerr=[agg[m][g][metric][1] for m in agg], label=g)
    ax.set_xticks(x, list(agg))
    ax.set_ylabel(metric.upper())
    ax.legend()
    ax.set_title(f"Head vs tail users ({metric})")
    path = Path(f"{prefix}-head-tail.png")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


def compare(models, dataset, seeds=(2020,), config_files=(), overrides=None, data_source=None, strict=False,
            results_dir=RESULTS_DIR, log=print):
    """Train (or reuse) every model x seed, then write the comparison table, CSV and plots."""
    overrides = dict(overrides or {})
    prepare_dataset(dataset, overrides.get("data_path", str(DATASET_DIR)), data_source=data_source, strict=strict)
    results_dir = Path(results_dir)
    runs_dir = results_dir / "runs"
    per_model = split_overrides(models, dataset, overrides)
    results = {}
    total, done = len(models) * len(seeds), 0
    for model in models:
        results[model] = []
        for seed in seeds:
            done += 1
            log(f"[{done}/{total}] {model} seed {seed} on {dataset}")
            results[model].append(load_or_run(model, dataset, seed, config_files, per_model[model], runs_dir, log))
    return report(results, dataset, results_dir, log)


def report(results, dataset, results_dir=RESULTS_DIR, log=print):
    """Table (Markdown, CSV), t-tests and plots for ``{model: [run result, ...]}``; the first model is
    tested against each other one."""
    models = list(results)
    results_dir = Path(results_dir)
    first_run = results[models[0]][0]
    topk = tuple(first_run["protocol"]["topk"])
    protocol = "history masked" if first_run["protocol"]["mask_history"] else "history not masked"
    if len({r["protocol"]["mask_history"] for runs in results.values() for r in runs}) > 1:
        raise ValueError("runs mix mask_history settings; a comparison needs one protocol")
    tests = paired_tests(results, topk) if len(models) > 1 else {}
    gains = tail_head_gains(results, topk)
    md, rows = tables(results, topk, tests, protocol, gains)
    prefix = results_dir / f"compare-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    atomic_write_text(f"{prefix}.md", md)
    buf = io.StringIO()
    fields = sorted({k for row in rows for k in row}, key=lambda k: (k not in ("model", "seeds"), k))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(f"{prefix}.csv", buf.getvalue())
    written = plots(results, topk, prefix)
    log("\n" + md)
    log("wrote " + ", ".join(str(p) for p in [Path(f"{prefix}.md"), Path(f"{prefix}.csv"), *written]))
    return {"results": results, "tests": tests, "gains": gains, "markdown": md, "prefix": str(prefix)}
