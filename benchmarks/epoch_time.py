"""Training-speed benchmark: seconds per epoch of S4Rec, its variants and the baselines.

    python benchmarks/epoch_time.py --dataset=amazon-beauty [--steps=60] [--repeats=3] [--fractions=0.25,0.5,1]

Each measured setting trains ``steps`` optimizer steps (after ``warmup`` steps that are not timed);
the settings are interleaved and repeated, and the median over repeats of the mean step time times the
number of batches gives the estimated epoch. The per-epoch K-means of the K-means variants is timed on
its own. Peak memory is how far RSS rises above the loaded model and data while a separate process
trains the same setting for 10 steps (and runs its K-means), sampled every 5 ms. A Markdown
table, with the machine description, goes to ``benchmarks/results/``.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from s4rec_recbole import compat  # noqa: E402,F401
from recbole.utils import init_seed  # noqa: E402

from s4rec_recbole.config import DATASET_DIR  # noqa: E402
from s4rec_recbole.data import prepare_dataset  # noqa: E402
from s4rec_recbole.data.prepare import atomic_write_text  # noqa: E402
from s4rec_recbole.model import build_model  # noqa: E402
from s4rec_recbole.runner import build_config, prepare_data  # noqa: E402
from s4rec_recbole.trainer import S4RecTrainer, cpu_model  # noqa: E402

OFF = {"alpha": 0.0, "beta1": 0.0, "beta2": 0.0, "lambda": 0.0}
BUCKET = {"length_bucket_pool": 32}
RANDOM = {"length_bucket_pool": 0}  # explicit: a dataset file (properties/dataset/) may switch bucketing on
SHIPPED = {**RANDOM, "trim_padding": False, "fused_gelu": False}  # RecBole's batches (random, padded) and GELU
# the encoder every model here has by default, set for every setting: tuned settings on a dataset
# (properties/dataset/<dataset>/<model>.yaml: SASRec's and ICLRec's on Beauty) would otherwise make the timed encoders differ
ENCODER = {"n_layers": 2, "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5}
N_CLUSTERS = 0  # --n_clusters: K of the clustering models, 0 for their defaults
GPU = False  # --gpu: train on the GPU (steps timed with CUDA synchronisation)
# label -> (model, overrides, autograd anomaly detection on as RecBole ships it)
SETTINGS = {
    "SASRec (RecBole as shipped, anomaly on)": ("SASRec", SHIPPED, True),
    "SASRec (RecBole, anomaly off)": ("SASRec", SHIPPED, False),
    "SASRec (RecBole, anomaly off, trimmed + bucketed batches, RecBole's GELU)":
        ("SASRec", {**BUCKET, "fused_gelu": False}, False),
    "SASRec (RecBole, anomaly off, trimmed + bucketed batches)": ("SASRec", BUCKET, False),
    "SASRec path (S4Rec, aux weights 0, bucketed)": ("S4Rec", {**OFF, **BUCKET}, False),
    "S4Rec (random batches)": ("S4Rec", RANDOM, False),
    "S4Rec (bucketed, RecBole's GELU)": ("S4Rec", {**BUCKET, "fused_gelu": False}, False),
    "S4Rec (bucketed)": ("S4Rec", BUCKET, False),
    "S4Rec-kmeans (bucketed)": ("S4Rec-kmeans", BUCKET, False),
    "ICLRec (bucketed)": ("ICLRec", BUCKET, False),
}


def machine():
    cpu = cpu_model()
    gpu = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), " if GPU else ""
    return (f"{platform.node()}: {gpu}{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


def sync():
    """Wait for the GPU's queued work (timings of GPU runs); nothing on CPU."""
    if GPU:
        torch.cuda.synchronize()


def setting_overrides(model, overrides, data_path, batch_size):
    """The configuration overrides of one setting: the shared encoder, then the setting's own."""
    over = {"data_path": str(data_path), "state": "ERROR", "show_progress": False,
            "train_batch_size": batch_size, "use_gpu": GPU, **ENCODER, **overrides}
    if N_CLUSTERS and model != "SASRec":
        over["n_clusters"] = N_CLUSTERS
    return over


class Setting:
    """One model/configuration with its data loader, optimizer and a running batch iterator."""

    def __init__(self, label, model, overrides, anomaly, dataset, data_path, batch_size):
        self.label, self.anomaly = label, anomaly
        self.config = build_config(model, dataset, overrides=setting_overrides(model, overrides, data_path, batch_size))
        init_seed(self.config["seed"], True)
        _, self.train, self.valid, _ = prepare_data(self.config)
        self.model = build_model(self.config, self.train._dataset)
        self.trainer = S4RecTrainer(self.config, self.model)
        self.batches = len(self.train)
        self._it = iter(self.train)

    def next_batch(self):
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.train)
            return next(self._it)

    def steps(self, n):
        """Mean seconds per optimizer step over ``n`` steps."""
        self.model.train()
        torch.autograd.set_detect_anomaly(self.anomaly)
        try:
            sync()
            start = time.perf_counter()
            for _ in range(n):
                batch = self.next_batch().to(self.trainer.device)
                self.trainer.optimizer.zero_grad()
                losses = self.model.calculate_loss(batch)
                loss = sum(losses) if isinstance(losses, tuple) else losses
                loss.backward()
                self.trainer.optimizer.step()
            sync()
            return (time.perf_counter() - start) / n
        finally:
            torch.autograd.set_detect_anomaly(False)

    def clustering_seconds(self):
        """Seconds of the per-epoch K-means hook (0 for models without one)."""
        if not (getattr(self.model, "clustering", None) == "kmeans" or hasattr(self.model, "intent_ids")):
            return 0.0
        sync()
        start = time.perf_counter()
        self.model.on_epoch_start(self.trainer, self.train, 0)
        sync()
        return time.perf_counter() - start


def validation_seconds(setting):
    """Full-ranking validation of every user with our trainer (history masking included): the faster of two."""
    trainer = S4RecTrainer(setting.config, setting.model)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        trainer.evaluate(setting.valid, load_best_model=False)
        times.append(time.perf_counter() - start)
    return min(times)


def subset_dataset(dataset, fraction, data_path):
    """A copy of ``dataset``'s atomic file with its first ``fraction`` of users, as ``<dataset>-pNN``."""
    name = f"{dataset}-p{int(round(fraction * 100))}"
    target = Path(data_path) / name / f"{name}.inter"
    if not target.is_file():
        header, *lines = (Path(data_path) / dataset / f"{dataset}.inter").read_text().splitlines(keepends=True)
        users = list(dict.fromkeys(line.split("\t", 1)[0] for line in lines))
        keep = set(users[: max(1, int(len(users) * fraction))])
        atomic_write_text(target, header + "".join(l for l in lines if l.split("\t", 1)[0] in keep))
    return name


def training_peak_mb(setting, steps):
    """Peak RSS above the RSS before training (MB) while ``setting`` runs ``steps`` steps (+ K-means)."""
    import gc
    import threading

    import psutil

    gc.collect()
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak, done = [base], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    setting.steps(steps)
    setting.clustering_seconds()
    done.set()
    thread.join()
    return (peak[0] - base) / 2 ** 20


def peak_rss_mb(label, args):
    """Peak RSS above the loaded data (MB) of a fresh process that builds ``label`` and trains a few steps."""
    cmd = [sys.executable, __file__, f"--dataset={args.dataset}", f"--batch_size={args.batch_size}",
           f"--n_clusters={args.n_clusters}",
           f"--data_path={args.data_path}", f"--memory_probe={label}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--fractions", default="0.25,0.5,1.0", help="user fractions for the cost growth table")
    parser.add_argument("--only", default="", help="comma-separated labels (prefix match) to measure")
    parser.add_argument("--no_memory", action="store_true")
    parser.add_argument("--memory_only", action="store_true", help="only the peak-memory table")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of S4Rec")
    parser.add_argument("--gpu", action="store_true", help="train on the GPU (default: CPU)")
    parser.add_argument("--data_path", default=str(DATASET_DIR))
    parser.add_argument("--n_clusters", type=int, default=0, help="K of the clustering models (0: their default)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--memory_probe", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global N_CLUSTERS, GPU
    N_CLUSTERS, GPU = args.n_clusters, args.gpu
    if args.threads:
        torch.set_num_threads(args.threads)
    data_path = Path(args.data_path)
    prepare_dataset(args.dataset, data_path)

    if args.memory_probe:
        model, over, anomaly = SETTINGS[args.memory_probe]
        s = Setting(args.memory_probe, model, over, anomaly, args.dataset, data_path, args.batch_size)
        print(training_peak_mb(s, 10))
        return

    labels = [k for k in SETTINGS if not args.only or any(k.startswith(p) for p in args.only.split(","))]
    if args.memory_only:
        lines = ["| setting | training peak RSS above the loaded model and data, MB |", "|---|---|"]
        lines += [f"| {k} | {peak_rss_mb(k, args):.0f} |" for k in labels]
        print("\n".join(lines))
        return
    settings = [Setting(k, *SETTINGS[k], args.dataset, data_path, args.batch_size) for k in labels]
    for s in settings:
        s.steps(args.warmup)
    step_times = {s.label: [] for s in settings}
    cluster_times = {s.label: [] for s in settings}
    for r in range(args.repeats):
        for s in settings:
            step_times[s.label].append(s.steps(args.steps))
            cluster_times[s.label].append(s.clustering_seconds())
        print(f"repeat {r + 1}/{args.repeats} done", flush=True)

    rows = []
    for s in settings:
        step = statistics.median(step_times[s.label])
        clus = statistics.median(cluster_times[s.label])
        rows.append({"label": s.label, "batches": s.batches, "samples": len(s.train._dataset),
                     "step_s": step, "train_s": step * s.batches,
                     "cluster_s": clus, "epoch_s": step * s.batches + clus, "valid_s": validation_seconds(s),
                     "peak_rss_mb": float("nan") if args.no_memory else peak_rss_mb(s.label, args)})
    by = {r["label"]: r for r in rows}

    lines = [f"# Epoch-time benchmark: {args.dataset}", "", f"Machine: {machine()}", "",
             f"Command: `python benchmarks/epoch_time.py {' '.join(sys.argv[1:])}`", "",
             f"Batch size {args.batch_size}; {args.steps} timed steps x {args.repeats} interleaved repeats after "
             f"{args.warmup} warm-up steps; epoch = median step time x batches (+ the per-epoch K-means).", "",
             "| setting | batches | s/step | train s/epoch | K-means s/epoch | epoch s | validation s | training peak MB |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['batches']} | {r['step_s']:.4f} | {r['train_s']:.1f} | {r['cluster_s']:.1f} | "
              f"{r['epoch_s']:.1f} | {r['valid_s']:.1f} | {r['peak_rss_mb']:.0f} |" for r in rows]
    ratios = []

    def ratio(name, a, b):
        if a in by and b in by:
            ratios.append(f"- `{name} = {by[a]['epoch_s'] / by[b]['epoch_s']:.2f}` ({a} / {b})")

    shipped = "SASRec (RecBole as shipped, anomaly on)"
    ratio("S4Rec/SASRec", "S4Rec (bucketed)", shipped)
    ratio("S4Rec(random batches)/SASRec", "S4Rec (random batches)", shipped)
    ratio("SASRec path/SASRec", "SASRec path (S4Rec, aux weights 0, bucketed)", shipped)
    ratio("online/kmeans", "S4Rec (bucketed)", "S4Rec-kmeans (bucketed)")
    ratio("online/ICLRec", "S4Rec (bucketed)", "ICLRec (bucketed)")
    lines += ["", "Ratios of epoch time (lower is faster):", ""] + ratios

    if settings:
        lines += ["", f"Validation: full ranking of all {len(settings[0].valid._dataset)} users with our trainer "
                  "(history masked), the faster of two passes, untrained weights."]

    fractions = [float(f) for f in args.fractions.split(",") if f]
    if fractions:
        lines += ["", "Cost growth with the number of users (bucketed batches):", "",
                  "| users | S4Rec epoch s | S4Rec-kmeans train s | S4Rec-kmeans K-means s | S4Rec-kmeans epoch s |",
                  "|---|---|---|---|---|"]
        for f in fractions:
            if f >= 1 and "S4Rec (bucketed)" in by and "S4Rec-kmeans (bucketed)" in by:
                o, k = by["S4Rec (bucketed)"], by["S4Rec-kmeans (bucketed)"]  # measured above
                samples, o_epoch, k_train, k_clu = o["samples"], o["epoch_s"], k["train_s"], k["cluster_s"]
            else:
                name = subset_dataset(args.dataset, f, data_path) if f < 1 else args.dataset
                online = Setting("S4Rec", "S4Rec", BUCKET, False, name, data_path, args.batch_size)
                km = Setting("S4Rec-kmeans", "S4Rec-kmeans", BUCKET, False, name, data_path, args.batch_size)
                online.steps(args.warmup), km.steps(args.warmup)
                o_epoch = statistics.median(online.steps(args.steps) for _ in range(args.repeats)) * online.batches
                k_train = statistics.median(km.steps(args.steps) for _ in range(args.repeats)) * km.batches
                k_clu = statistics.median(km.clustering_seconds() for _ in range(args.repeats))
                samples = len(online.train._dataset)
            lines.append(f"| {int(f * 100)}% ({samples} samples) | {o_epoch:.1f} | {k_train:.1f} | "
                         f"{k_clu:.1f} | {k_train + k_clu:.1f} |")

    if args.profile:
        s = next(s for s in settings if s.label.startswith("S4Rec"))
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if GPU else [])
        with torch.profiler.profile(activities=activities) as prof:
            s.steps(10)
        what = "self_device_time_total" if GPU else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=what, row_limit=20)
        lines += ["", f"torch.profiler, 10 steps of {s.label}, top ops by {what}:", "", "```", table, "```"]

    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out) / f"epoch_time-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}.md"
    atomic_write_text(out, text)
    atomic_write_text(out.with_suffix(".json"), json.dumps({"rows": rows, "machine": machine()}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
