"""Ray Tune backend of :mod:`s4rec_recbole.tune`: the same trials, run in parallel Ray workers.

The driver proposes the parameter sets (all pending ones for grid and random search, waves of
``concurrency`` for TPE) and Ray Tune runs each as one trial on ``cpus_per_trial`` CPUs, locally or on the
cluster at ``ray_address``. Each trial writes its own record atomically, exactly as the local backend
does, so a search can be killed, continued and even switched between backends.
On a cluster, every node needs this repository and the prepared ``dataset/`` at the same path (a shared
filesystem), as RecBole's own Ray support assumes.
"""
import os
from pathlib import Path

from s4rec_recbole.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _trainable(study, wave):
    def trainable(config):
        from ray.air import session

        index = config["trial"]
        record = study.run_trial(index, wave[index])
        session.report({"valid_score": record["valid_score"] if record["status"] == "ok" else float("nan"),
                        "failed": record["status"] != "ok"})
    return trainable


def run_waves(study, history, max_trials, ray_address=None, concurrency=None, cpus_per_trial=1, log=print):
    try:
        import ray
        from ray import air, tune
    except ImportError as e:  # pragma: no cover - ray is in requirements.txt
        raise ConfigError(f"--backend=ray needs ray[tune] (pip install 'ray[tune]==2.6.3'): {e}") from None
    started = not ray.is_initialized()
    if started:
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                            "PYTHONWARNINGS": "ignore"}}
        ray.init(address=ray_address, runtime_env=env, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", **({} if ray_address else {"num_cpus": os.cpu_count()}))
    try:
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_trial))
        concurrency = concurrency or slots
        while len(history) < max_trials:
            remaining = max_trials - len(history)
            wave = dict(study.next_params(history, remaining if study.algo != "tpe" else min(concurrency, remaining)))
            if not wave:
                break
            log(f"ray: {len(wave)} trials on {min(concurrency, len(wave))} parallel workers "
                f"({cpus_per_trial} CPU each)")
            tuner = tune.Tuner(
                tune.with_resources(_trainable(study, wave), {"cpu": cpus_per_trial}),
                param_space={"trial": tune.grid_search(sorted(wave))},
                tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
                run_config=air.RunConfig(storage_path=str(study.dir / "ray"), name="waves", verbose=0),
            )
            tuner.fit()
            done = {t["trial"]: t for t in study.trials()}
            missing = [i for i in wave if i not in done]
            if missing:
                raise RuntimeError(f"ray: trials {missing} produced no record; see {study.dir / 'ray'}")
            for i in sorted(wave):
                log(study.describe(done[i], max_trials))
            history = [done[i] for i in sorted(done)]
    finally:
        if started:
            ray.shutdown()
