"""Command-line runner: prepare a benchmark, train one model with RecBole, evaluate, save the result.

``python run_s4rec.py --dataset=amazon-beauty [--model=NAME] [--config_files=a.yaml,b.yaml] [--key=value ...]``
"""
import json
import logging
import sys
import time
from unittest import mock
from pathlib import Path

from s4rec_recbole import compat  # noqa: F401  (anomaly detection off before RecBole models load)
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, init_seed
from recbole.utils import logger as recbole_logger

from s4rec_recbole.config import DATASET_DIR, ConfigError, S4RecConfig, parse_value
from s4rec_recbole.data import DataError, prepare_dataset
from s4rec_recbole.data.loader import (PREFIX_LENGTH_FIELD, TRAIN_SAMPLES, BucketedTrainDataLoader,
                                       SortedFullSortEvalDataLoader, TrimmedTrainDataLoader, prefix_lengths, trims)
from s4rec_recbole.recommend import RecommendError
from s4rec_recbole.model import build_model, default_model, resolve_model, split_variant
from s4rec_recbole.trainer import (best_epoch, hardware, load_project_checkpoint, S4RecTrainer, history_matrices,
                                   new_run_id, plain, run_timings, single_process)
from s4rec_recbole.data.prepare import atomic_write_text
from s4rec_recbole.layers import head_threshold
from s4rec_recbole.metrics import summarize
from s4rec_recbole.model.base import ContrastiveSASRec, user_training_lengths

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "results"
# Options of --tune (hyperparameter search, s4rec_recbole.tune).
TUNE_KEYS = ("algo", "max_trials", "trials", "backend", "ray_address", "concurrency", "cpus_per_trial")
_STRING_KEYS = ("dataset", "model", "config_files", "data_source", "results_dir", "seeds", "resume", "evaluate",
                "checkpoint", "user", "items", "output", "tune", "algo", "trials", "backend", "ray_address")
_FLAGS = ("recommend", "all_users", "exclude_history")

USAGE = """usage: python run_s4rec.py --dataset=NAME [--model=NAME[,NAME...]] [--seeds=1,2,3]
                         [--config_files=a.yaml,b.yaml] [--data_source=PATH] [--strict=true]
                         [--results_dir=DIR] [--key=value ...]

  --dataset       amazon-beauty, amazon-sports-outdoors, amazon-toys-games, yelp, ml-1m, or any name
                  with dataset/NAME/NAME.inter (or with --data_source=FILE to convert)
  --model         a plugin model or any RecBole sequential model (default: %s); several,
                  comma separated, or --seeds, run a side-by-side comparison (resumable)
  --seeds         seeds of the comparison, comma separated (default: the config's seed)
  --config_files  YAML files applied after properties/ (comma separated)
  --data_source   one-line-per-user benchmark file (or its folder) to convert (else env
                  S4REC_DATA_SOURCE, then ../shared/datasets/NAME/, then download)
  --strict        fail on users with fewer than 3 items instead of skipping them
  --resume        continue an interrupted training from its saved/<...>.last.pth (exactly, same RNG state)
  --nproc         distributed data-parallel training in N processes on this host (gloo on CPU, NCCL on GPU)
  --world_size    total processes over all hosts (multi-host: also --offset=first rank of this host,
                  --ip=address of the rank-0 host, --port=its free TCP port; default localhost:29500)
  --key=value     any RecBole or model configuration key, e.g. --epochs=20 --learning_rate=1e-3

       python run_s4rec.py --tune=properties/hyper/S4Rec.yaml --dataset=NAME [--algo=grid|random|tpe]
                           [--max_trials=N] [--trials=I,J,...] [--backend=local|ray] [--ray_address=HOST:PORT]
                           [--concurrency=N] [--cpus_per_trial=1] [--key=value ...]
  hyperparameter search over a YAML space, selected on the validation metric, resumable; --trials runs
  only those trial numbers of a grid or random search (split one search over machines or sessions)
  (the model defaults to the space file's name when it names a model)

       python run_s4rec.py --evaluate=saved/<...>.pth [--mask_history=False] [--topk=[5,10,20]] [--key=value ...]
  evaluates a trained checkpoint (validation and test, head/tail, result JSON) without training, under
  its own settings changed by the given keys, e.g. the other protocol

       python run_s4rec.py --recommend --checkpoint=PATH (--user=ID | --items=ID,ID,... |
                           --all_users --output=recs.csv) [--topk=10] [--exclude_history] [--data_path=DIR]
  recommends with a trained checkpoint (ids as in the data files)
"""


class UsageError(ValueError):
    """Bad command line; the message says what is accepted."""


def parse_args(argv):
    """``--key=value`` pairs -> dict of typed values. Raises :class:`UsageError` on anything else."""
    out = {}
    for arg in argv:
        if arg in ("-h", "--help"):
            print(USAGE % default_model())
            raise SystemExit(0)
        if arg[2:] in _FLAGS:
            arg = arg + "=true"
        if not arg.startswith("--") or "=" not in arg:
            raise UsageError(f"argument {arg!r}: expected --key=value")
        key, value = arg[2:].split("=", 1)
        if not key:
            raise UsageError(f"argument {arg!r}: empty key; expected --key=value")
        if key in out:
            raise UsageError(f"argument --{key} given twice")
        out[key] = value if key in _STRING_KEYS else parse_value(value)
    return out


def build_config(model, dataset, config_files=(), overrides=None):
    """:class:`S4RecConfig` for ``model`` (name, variant name or class) on ``dataset`` with the
    project's defaults; a variant's settings (e.g. ``S4Rec-kmeans``) sit just below ``overrides``."""
    settings = {} if not isinstance(model, str) else split_variant(model)[1]
    overrides = dict(settings, **(overrides or {}))
    overrides.setdefault("data_path", str(DATASET_DIR))
    return S4RecConfig(model=resolve_model(model), dataset=dataset, config_file_list=list(config_files),
                       config_dict=overrides, variant=model if settings else None)


def prepare_data(config):
    """RecBole dataset and loaders, with the history matrices that ``mask_history`` needs."""
    samples = config["train_samples"]
    if samples not in TRAIN_SAMPLES:
        raise ConfigError(f"train_samples={samples!r}: expected one of {list(TRAIN_SAMPLES)}")
    plugin = issubclass(resolve_model(config["model"]), ContrastiveSASRec)
    if samples == "sequence" and not plugin:
        raise ConfigError(f"train_samples='sequence' for model {config['model']}: only the plugin models "
                          "(S4Rec and its variants, CL4SRec, ICLRec) train on whole sequences")
    dataset = create_dataset(config)
    with single_process(config) as distributed:  # evaluation loaders cover every user on every rank
        train_data, valid_data, test_data = data_preparation(config, dataset)
        if plugin or trims(config):  # users in order of length, batches cut to their longest sequence
            valid_data, test_data = (SortedFullSortEvalDataLoader(config, d._dataset, d._sampler, trim=trims(config))
                                     for d in (valid_data, test_data))
    # rebuilt: sharded over the ranks (RecBole's DistributedSampler) when distributed, bucketed and/or trimmed
    if distributed or config["length_bucket_pool"] or trims(config) or samples == "sequence":
        bucketed = config["length_bucket_pool"] or samples == "sequence"
        loader = BucketedTrainDataLoader if bucketed else TrimmedTrainDataLoader
        train_data = loader(config, train_data._dataset, train_data._sampler, shuffle=True)
    if plugin:  # the head/tail adversary labels a sample by its own length, which item_length caps
        train_data._dataset.inter_feat[PREFIX_LENGTH_FIELD] = prefix_lengths(train_data._dataset)
    valid_data.history_matrix, test_data.history_matrix = history_matrices(train_data, valid_data)
    return dataset, train_data, valid_data, test_data


def init_run_logger(config, run_id):
    """RecBole's console + file logging, with one file per run: ``log/<model>/<model>-<dataset>-<run id>-<md5>.log``.

    RecBole names the file by the second (two runs started together wrote into one file) and installs its
    handlers with ``logging.basicConfig``, which does nothing once the process has a handler (the second
    run of a comparison kept writing into the first run's file). Here the previous run's handlers are
    closed and RecBole's new ones installed directly. Returns the log file's path.
    """
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "s4rec_run_handler", False)]:
        root.removeHandler(h)
        h.close()
    # RecBole's ensure_dir checks, then creates: made here first, two runs starting together in one folder
    # no longer crash on the second one's makedirs (FileExistsError: './log')
    Path("log", config["model"]).mkdir(parents=True, exist_ok=True)
    captured = {}
    with mock.patch.object(recbole_logger, "get_local_time", lambda: run_id), \
            mock.patch.object(logging, "basicConfig", lambda level, handlers: captured.update(level=level,
                                                                                                handlers=handlers)):
        init_logger(config)
    root.setLevel(captured["level"])
    path = None
    for h in captured["handlers"]:
        h.s4rec_run_handler = True
        root.addHandler(h)
        path = getattr(h, "baseFilename", path)
    return path


def format_table(valid, test, protocol):
    """Validation and test metrics side by side; ``test=None`` prints validation only (tuning trials)."""
    keys = list(test.keys() if test is not None else valid.keys())
    width = max(len(k) for k in keys)
    head = f"{'metric':<{width}}  {'valid':>8}" + (f"  {'test':>8}" if test is not None else "")
    lines = [f"{head}    ({protocol})"]
    lines += [f"{k:<{width}}  {valid.get(k, float('nan')):>8.4f}" + (f"  {test[k]:>8.4f}" if test is not None else "")
              for k in keys]
    return "\n".join(lines)


def run(model=None, dataset=None, config_files=(), overrides=None, data_source=None, strict=False,
        results_dir=RESULTS_DIR, saved=True, result_name=None, resume=None, show_test=True, evaluate=None):
    """Prepare ``dataset``, train and evaluate ``model``; return the result dict (also written as JSON
    to ``results_dir/result_name``, by default ``<model>-<dataset>-seed<seed>-<run id>.json``).
    ``show_test=False`` keeps test metrics out of the printed table and the log (tuning trials).
    ``evaluate=CHECKPOINT`` skips training and evaluates the checkpoint's weights (see :func:`evaluate`)."""
    if resume and not Path(resume).is_file():  # before the minutes of building the data
        raise UsageError(f"--resume={resume}: no such file; expected a checkpoint (*.last.pth continues exactly)")
    overrides = dict(overrides or {})
    model = model or default_model()
    data_path = overrides.get("data_path", str(DATASET_DIR))
    prepare_dataset(dataset, data_path, data_source=data_source, strict=strict)
    config = build_config(model, dataset, config_files, overrides)
    label = model if isinstance(model, str) else config["model"]
    init_seed(config["seed"], config["reproducibility"])
    distributed = not config["single_spec"]
    run_id = new_run_id()
    if distributed:  # every rank names its files after rank 0's run id
        import torch.distributed as dist

        shared = [run_id]
        dist.broadcast_object_list(shared, src=0)
        run_id = shared[0]
    main_rank = not distributed or config["local_rank"] == 0
    log_file = init_run_logger(config, run_id) if main_rank else None
    logger = logging.getLogger()
    logger.info(config)
    t0 = time.time()
    ds, train_data, valid_data, test_data = prepare_data(config)
    logger.info(ds)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_obj = build_model(config, train_data._dataset)
    logger.info(model_obj)
    trainer = S4RecTrainer(config, model_obj, run_id=run_id, label=label)
    if resume:
        trainer.resume_checkpoint(resume)
    t_fit = time.time()
    if evaluate:
        best_valid = trainer.evaluate(valid_data, model_file=evaluate, show_progress=config["show_progress"])
        best_valid_score = best_valid[config["valid_metric"].lower()]
    else:
        best_valid_score, best_valid = trainer.fit(train_data, valid_data, saved=saved,
                                                   show_progress=config["show_progress"])
    fit_s = time.time() - t_fit
    if distributed:
        dist.barrier()  # rank 0 has written the best checkpoint that every rank loads for the test
    t_eval = time.time()
    test = trainer.evaluate(test_data, load_best_model=saved or bool(evaluate), model_file=evaluate,
                            show_progress=config["show_progress"])
    eval_s = time.time() - t_eval
    users, ranks, clusters = trainer.user_ranks(test_data)
    lengths = user_training_lengths(train_data._dataset)
    head_min = head_threshold(lengths[lengths > 0], config["head_ratio"])
    topk = tuple(config["topk"]) if isinstance(config["topk"], (list, tuple)) else (config["topk"],)
    protocol = {
        "split": plain(config["eval_args"]), "mask_history": bool(config["mask_history"]),
        "metrics": plain(config["metrics"]), "topk": plain(config["topk"]),
        "valid_metric": config["valid_metric"], "max_seq_length": config["MAX_ITEM_LIST_LENGTH"],
    }
    result = {
        "model": label, "dataset": dataset, "seed": config["seed"],
        "protocol": protocol,
        "best_valid": plain(dict(best_valid or {})), "test": plain(dict(test)),
        "best_valid_score": float(best_valid_score),
        # epochs of the whole training (the curve is kept across --resume); those of this process; the best one
        "epochs_run": max(len(trainer.curve), len(trainer.epoch_times)), "epochs_this_process": len(trainer.epoch_times),
        "best_epoch": best_epoch(trainer.curve),
        "stopped": trainer.stopped,  # what ended this process's training (None when a checkpoint was evaluated)
        "hardware": hardware(trainer.device),
        "timings": {"epoch_train_s": [round(t, 3) for t in trainer.epoch_times],
                    "mean_epoch_train_s": round(sum(trainer.epoch_times) / max(len(trainer.epoch_times), 1), 3),
                    "fit_s": round(fit_s, 3), "test_eval_s": round(eval_s, 3), "total_s": round(time.time() - t0, 3),
                    # training and validation seconds of every process of the run (the above are this process's)
                    "run": run_timings(trainer.curve)},
        "curve": trainer.curve,
        "head_min_length": head_min,
        "test_by_group": summarize(ranks, lengths[users], head_min, topk),
        "per_user": {"user": users.tolist(), "rank": ranks.tolist(), "length": lengths[users].tolist(),
                     "cluster": clusters.tolist() if clusters is not None else None},
        "checkpoint": evaluate or (trainer.saved_model_file if saved else None), "evaluated_from": evaluate,
        # an evaluated checkpoint's own training: its epoch (from 0) and the curve before it (a .last.pth has every
        # epoch; a best checkpoint is written before its epoch joins the curve)
        **(checkpoint_training(evaluate) if evaluate else {}),
        "config": plain(config.final_config_dict),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "run_id": trainer.run_id, "resumed_from": resume,
        "log_file": log_file,
        "distributed": {"world_size": int(config["world_size"]), "backend": dist.get_backend()} if distributed else None,
    }
    if distributed and dist.get_rank() != 0:
        return None
    name = result_name or f"{label}-{dataset}-seed{config['seed']}-{trainer.run_id}.json"
    out = Path(results_dir) / name
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    result["result_file"] = str(out)
    which = "history masked" if protocol["mask_history"] else "history not masked"
    table = format_table(result["best_valid"], result["test"] if show_test else None, which)
    logger.info("\n" + table)
    done = (f"checkpoint {evaluate} evaluated" if evaluate else
            f"{result['epochs_run']} epochs, "
            f"{(result['timings']['run'] or result['timings'])['mean_epoch_train_s']:.1f} s/epoch")
    print(f"\n{label} on {dataset}: {done}\n{table}\nresult: {out}")
    return result


def checkpoint_training(path):
    """``{"checkpoint_epoch", "checkpoint_curve"}`` of a checkpoint written by training."""
    state = load_project_checkpoint(path)
    return {"checkpoint_epoch": state.get("epoch"), "checkpoint_curve": state.get("curve") or []}


def evaluate(checkpoint, overrides=None, data_source=None, results_dir=RESULTS_DIR):
    """Evaluate a checkpoint written by training, without training: validation and test under the
    checkpoint's own settings (model, dataset, seed, protocol) changed by ``overrides``, e.g.
    ``{"mask_history": False}`` for the other protocol. Writes and returns a result as :func:`run`."""
    path = Path(checkpoint)
    if not path.is_file():
        raise UsageError(f"--evaluate={checkpoint}: no such file; expected a checkpoint written by training (.pth)")
    try:
        state = load_project_checkpoint(path)
    except ValueError as e:
        raise UsageError(f"--evaluate={e}") from None
    overrides = dict(overrides or {})
    settings = {k: v for k, v in state["settings"].items() if k not in DIST_KEYS and k != "local_rank"}
    if "data_path" not in overrides and not Path(str(settings.get("data_path", ""))).is_dir():
        settings["data_path"] = str(DATASET_DIR)  # trained elsewhere: this project's dataset folder
    settings.update(overrides)
    try:
        # checkpoints before 2026-12-03 have no label: their variant runs are evaluated under the class name
        return run(model=state.get("label", state["model"]), dataset=state["dataset"], overrides=settings,
                   data_source=data_source, results_dir=results_dir, saved=False, evaluate=str(path))
    except RuntimeError as e:
        if "state_dict" not in str(e):
            raise
        raise UsageError(f"--evaluate={checkpoint}: the weights do not fit the model built from its settings and "
                         f"{sorted(overrides)} ({str(e).splitlines()[0]})") from None


DIST_KEYS = ("nproc", "world_size", "offset", "ip", "port")


def distributed_settings(args):
    """``{nproc, world_size, offset, ip, port}`` from the command line (popped from ``args``), checked;
    None for a single-process run."""
    given = {k: args.pop(k) for k in DIST_KEYS if k in args}
    nproc, world_size = given.get("nproc", 1), given.get("world_size", -1)
    offset, ip, port = given.get("offset", 0), str(given.get("ip", "localhost")), given.get("port", 29500)
    for key, value, low in (("nproc", nproc, 1), ("world_size", world_size, -1), ("offset", offset, 0),
                            ("port", port, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UsageError(f"--{key}={value}: expected an integer >= {low}")
    if world_size == -1:
        world_size = nproc
    if nproc == 1 and world_size == 1:
        if set(given) - {"nproc", "world_size"}:
            raise UsageError(f"--{sorted(set(given) - {'nproc', 'world_size'})[0]} needs --nproc > 1 or --world_size > 1")
        return None
    if offset + nproc > world_size:
        raise UsageError(f"--offset={offset} + --nproc={nproc} exceeds --world_size={world_size}; expected the "
                         "processes of this host to be ranks offset .. offset + nproc - 1 of world_size")
    if port > 65535:
        raise UsageError(f"--port={port}: expected a TCP port (1-65535)")
    return {"nproc": nproc, "world_size": world_size, "offset": offset, "ip": ip, "port": port}


def _ddp_worker(local_rank, kwargs, queue):
    """One process of a distributed run (spawned by :func:`run_distributed`)."""
    import torch.distributed as dist

    kwargs = dict(kwargs, overrides=dict(kwargs["overrides"], local_rank=local_rank))
    try:
        result = run(**kwargs)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if result is not None:
        queue.put({k: result[k] for k in ("test", "best_valid", "result_file", "timings")})


def run_distributed(settings, **kwargs):
    """``run`` in ``settings["nproc"]`` processes of one DDP job (RecBole's torch.distributed support).

    The same spawn scheme as RecBole's ``run_recboles`` (which lives in ``recbole.quick_start``, a module
    that imports ray), with gloo on CPU and NCCL on GPU. Returns rank 0's summary (None on other hosts).
    """
    import torch.multiprocessing as mp

    overrides = dict(kwargs.pop("overrides", {}), **settings)
    model, dataset = kwargs.get("model") or default_model(), kwargs["dataset"]
    data_path = overrides.get("data_path", str(DATASET_DIR))
    prepare_dataset(dataset, data_path, data_source=kwargs.pop("data_source", None),
                    strict=kwargs.pop("strict", False))
    build_config(model, dataset, kwargs.get("config_files", ()),
             {k: v for k, v in overrides.items() if k not in DIST_KEYS})  # errors before spawning
    queue = mp.get_context("spawn").SimpleQueue()
    try:
        mp.spawn(_ddp_worker, args=(dict(kwargs, model=model, overrides=overrides), queue),
                 nprocs=settings["nproc"], join=True)
    except mp.ProcessRaisedException as e:
        last = [line for line in str(e).strip().splitlines() if line.strip()][-1]
        raise DistributedError(f"a training process failed: {last}") from None
    return None if queue.empty() else queue.get()


class DistributedError(RuntimeError):
    """A spawned training process failed; the message carries its last error line."""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        if args.pop("recommend", False):
            return recommend_main(args)
        if "evaluate" in args:
            checkpoint = args.pop("evaluate")
            for key in ("dataset", "model", "seeds", "resume", "tune", "config_files", *DIST_KEYS):
                if key in args:
                    raise UsageError(f"--evaluate takes the model, dataset and settings from the checkpoint; drop "
                                     f"--{key} (give changed settings as --key=value)")
            results_dir, source = args.pop("results_dir", RESULTS_DIR), args.pop("data_source", None)
            evaluate(checkpoint, args, data_source=source, results_dir=results_dir)
            return 0
        dataset = args.pop("dataset", None)
        if not dataset:
            raise UsageError("missing --dataset=NAME (e.g. --dataset=amazon-beauty)")
        model = args.pop("model", None)
        files = [f for f in str(args.pop("config_files", "") or "").split(",") if f]
        source = args.pop("data_source", None)
        strict = bool(args.pop("strict", False))
        results_dir = args.pop("results_dir", RESULTS_DIR)
        seeds = args.pop("seeds", None)
        resume = args.pop("resume", None)
        space = args.pop("tune", None)
        distributed = distributed_settings(args)
        if distributed and space:
            raise UsageError("--tune runs whole trainings as trials; use --backend=ray for parallel trials, "
                             "not --nproc")
        tune_args = {k: args.pop(k) for k in TUNE_KEYS if k in args}
        if tune_args and not space:
            raise UsageError(f"--{next(iter(tune_args))} needs --tune=SPACE.yaml")
        if space:
            from s4rec_recbole.model import PLUGIN_MODELS, VARIANTS, recbole_sequential_models
            from s4rec_recbole.tune import tune

            if seeds or (model and "," in model):
                raise UsageError("--tune searches one model with one seed; drop --seeds / the model list")
            stem = Path(space).stem
            if not model and (stem in PLUGIN_MODELS or stem in VARIANTS or stem in recbole_sequential_models()):
                model = stem
            model = model or default_model()
            resolve_model(model)
            tune(space, model, dataset, config_files=files, overrides=args, data_source=source, strict=strict,
                 results_dir=results_dir, **tune_args)
        elif distributed:
            if (model and "," in model) or seeds or resume:
                raise UsageError("--nproc/--world_size train one model once; drop the model list, --seeds, --resume")
            run_distributed(distributed, model=model, dataset=dataset, config_files=files, overrides=args,
                            data_source=source, strict=strict, results_dir=results_dir)
        elif (model and "," in model) or seeds:
            from s4rec_recbole.compare import compare

            models = [m for m in (model or default_model()).split(",") if m]
            for m in models:
                resolve_model(m)
            try:
                seeds = [int(s) for s in seeds.split(",")] if seeds else [args.get("seed", 2020)]
            except ValueError:
                raise UsageError(f"--seeds={seeds}: expected comma-separated integers") from None
            compare(models, dataset, seeds, files, args, data_source=source, strict=strict, results_dir=results_dir)
        else:
            run(model=model, dataset=dataset, config_files=files, overrides=args, data_source=source,
                strict=strict, results_dir=results_dir, resume=resume)
    except (UsageError, ConfigError, DataError, RecommendError, FloatingPointError, DistributedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def recommend_main(args):
    """``--recommend``: print or write top-k items from a checkpoint."""
    from s4rec_recbole.recommend import load

    path = args.pop("checkpoint", None)
    if not path:
        raise UsageError("--recommend needs --checkpoint=PATH (a .pth file written by training)")
    user, items, all_users = args.pop("user", None), args.pop("items", None), args.pop("all_users", False)
    output, topk = args.pop("output", None), args.pop("topk", 10)
    exclude, data_path = bool(args.pop("exclude_history", False)), args.pop("data_path", None)
    if args:
        raise UsageError(f"--recommend does not take --{next(iter(args))}; expected --checkpoint, --user, --items, "
                         "--all_users, --output, --topk, --exclude_history, --data_path")
    if sum(x is not None and x is not False for x in (user, items, all_users or None)) != 1:
        raise UsageError("--recommend needs exactly one of --user=ID, --items=ID,ID,... or --all_users")
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise UsageError(f"--topk={topk}: expected a positive integer")
    rec = load(path, data_path)
    if all_users:
        if not output:
            raise UsageError("--all_users needs --output=FILE.csv")
        rec.recommend_all(output, topk, exclude)
        print(f"wrote {output}")
        return 0
    top = rec.recommend(user=user, items=items.split(",") if items else None, topk=topk, exclude_history=exclude)
    print("rank\titem_id\tscore")
    for r, (item, score) in enumerate(top, start=1):
        print(f"{r}\t{item}\t{score:.4f}")
    return 0
