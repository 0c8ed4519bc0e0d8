"""Hyperparameter search: space validation, the three algorithms, resume after a kill, validation-only
selection, the Ray backend."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tiny_overrides
from s4rec_recbole.config import ConfigError
from s4rec_recbole import tune as T


def space_file(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path, data, text, model="SASRec"):
    return T.load_space(space_file(tmp_path, text), model, "tiny", overrides={"data_path": str(data)})


def test_space_parses_every_distribution(tiny_data_path, tmp_path):
    space = load(tmp_path, tiny_data_path, "n_layers: {choice: [1, 2]}\nlearning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"
                 "hidden_dropout_prob: {uniform: [0.1, 0.5]}\ninner_size: {quniform: [64, 256, 64]}\n"
                 "n_heads: {randint: [1, 2]}\n")
    assert space["n_layers"] == ("choice", [1, 2]) and space["learning_rate"] == ("loguniform", [1e-4, 1e-2])
    for i in range(20):
        p = T.random_params(space, 7, i)
        assert p["n_layers"] in (1, 2) and 1e-4 <= p["learning_rate"] <= 1e-2
        assert 0.1 <= p["hidden_dropout_prob"] <= 0.5 and p["inner_size"] in (64, 128, 192, 256)
        assert p["n_heads"] in (1, 2) and isinstance(p["n_heads"], int) and isinstance(p["inner_size"], int)
    assert T.random_params(space, 7, 3) == T.random_params(space, 7, 3) != T.random_params(space, 7, 4)


@pytest.mark.parametrize("text, message", [
    ("n_layerz: {choice: [1, 2]}\n", "key 'n_layerz': not a configuration key of model SASRec"),
    ("n_layers: {normal: [1, 2]}\n", "unknown distribution 'normal'; accepted: choice, uniform"),
    ("n_layers: [1, 2]\n", r"expected one distribution such as \{choice: \[1, 2\]\}"),
    ("learning_rate: {loguniform: [0, 0.1]}\n", r"loguniform needs \[low, high\] with 0 < low < high, got \[0, 0.1\]"),
    ("learning_rate: {uniform: [0.1]}\n", r"uniform needs \[low, high\] with low < high"),
    ("inner_size: {quniform: [64, 256, 0]}\n", "quniform needs"),
    ("n_heads: {randint: [1.5, 3]}\n", "randint needs"),
    ("n_layers: {choice: []}\n", "choice needs a non-empty list"),
    ("n_layers: {choice: [1, two]}\n", "value 'two' rejected .*expected an integer"),
    ("n_layers: {choice: [1, 2]\n", "not valid YAML"),
    ("", "empty"),
])
def test_bad_spaces_are_one_line_errors(tiny_data_path, tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as e:
        load(tmp_path, tiny_data_path, text)
    assert "\n" not in str(e.value) and "space.yaml" in str(e.value)


def test_grid_needs_choice_everywhere(tiny_data_path, tmp_path):
    space = load(tmp_path, tiny_data_path, "n_layers: {choice: [1, 2]}\nlearning_rate: {uniform: [0.001, 0.01]}\n")
    with pytest.raises(ConfigError, match="--algo=grid needs choice for every key, got uniform"):
        T.grid(space)
    assert T.grid({"a": ("choice", [1, 2]), "b": ("choice", ["x", "y"])}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]


def test_tpe_suggestions_are_deterministic_and_use_the_history():
    space = {"n_layers": ("choice", [1, 2]), "learning_rate": ("loguniform", [1e-4, 1e-2])}
    history = []
    for i in range(3):
        (p,) = T.suggest(space, "tpe", history, 1, 5)
        history.append({"params": p, "status": "ok", "valid_score": 0.1 * i})
    assert T.suggest(space, "tpe", history, 3, 5) == T.suggest(space, "tpe", history, 3, 5)
    wave = T.suggest(space, "tpe", history, 3, 5)
    assert len(wave) == 3 and len({T.params_key(p) for p in wave}) == 3


def test_each_tpe_trial_is_drawn_from_the_trials_before_it(tmp_path, tiny_data_path, monkeypatch):
    def fake_run(model, dataset, config_files, overrides, results_dir, result_name, show_test, resume=None):
        score = overrides["n_layers"] / 10 + overrides["learning_rate"]
        return {"best_valid": {"ndcg@20": score}, "test": {"ndcg@20": score}, "best_valid_score": score,
                "epochs_run": 1, "checkpoint": None}

    monkeypatch.setattr(T, "run", fake_run)
    space = space_file(tmp_path, "n_layers: {choice: [1, 2]}\nlearning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n")
    common = dict(overrides={"data_path": str(tiny_data_path)}, results_dir=tmp_path / "res")
    T.tune(space, "SASRec", "tiny", algo="tpe", max_trials=4, **common)
    study = T.Study(space, "SASRec", "tiny", "tpe", **common)
    trials = study.trials()
    assert [t["trial"] for t in trials] == [0, 1, 2, 3]
    for i, t in enumerate(trials):
        assert t["params"] == T.suggest(study.space, "tpe", trials[:i], 1, study.seed)[0] == study.params_at(
            i, trials[:i]) == study.next_params(trials[:i], 1)[0][1]
    with pytest.raises(ValueError, match="tpe trial 2 asked for, but the next trial after the history is 5"):
        study.params_at(1, trials)


def test_best_trial_is_compared_with_the_defaults_run(tiny_data_path, tmp_path):
    from s4rec_recbole.compare import load_or_run

    res, over = tmp_path / "res", tiny_overrides(tiny_data_path, tmp_path)
    space = space_file(tmp_path, "n_layers: {choice: [1, 3]}\n")

    def outputs():  # the search's trials are done after the first call: later calls only rewrite the outputs
        T.tune(space, "SASRec", "tiny", algo="grid", overrides=over, results_dir=res, log=lambda *a: None)
        folder = next(res.glob("tune-SASRec-tiny-grid-*"))
        return (folder / "best.yaml").read_text().splitlines()[3], json.loads((folder / "best.json").read_text())

    line, best = outputs()
    assert "have no finished run with seed 2020" in line and "--seeds=2020" in line and best["defaults"] is None
    # the defaults (2 layers here), trained and stored as a comparison does
    run = load_or_run("SASRec", "tiny", 2020, (), over, res / "runs", log=lambda *a: None)
    path = next((res / "runs").glob("SASRec-tiny-seed2020-*.json"))
    line, best = outputs()
    assert best["defaults"]["valid_score"] == run["best_valid_score"] and best["defaults"]["run"].endswith(path.name)
    for score, verdict in ((0.0, "# It beats the model's current defaults"),
                           (1.0, "# It does not beat the model's current defaults")):
        path.write_text(json.dumps(dict(run, best_valid_score=score)))
        line, best = outputs()
        assert line.startswith(verdict) and f"{score:.4f}" in line and best["defaults"]["valid_score"] == score
    assert line.endswith("keep the defaults")
    # a best trial whose values are the defaults' (SASRec's 2 layers) is not compared with itself
    study = T.Study(space, "SASRec", "tiny", "grid", overrides=over, results_dir=res)
    assert study.verdict({"params": {"n_layers": 2}, "valid_score": 0.0}) == \
        ("It is the model's current default here: its values are what the settings give already", None)


@pytest.mark.parametrize("algo", ["grid", "random", "tpe"])
def test_three_trial_search(tiny_data_path, tmp_path, algo, capsys):
    text = "n_layers: {choice: [1, 2, 3]}\n" if algo == "grid" else \
        "n_layers: {choice: [1, 2]}\nlearning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"
    best = T.tune(space_file(tmp_path, text), "SASRec", "tiny", algo=algo, max_trials=3,
                  overrides=tiny_overrides(tiny_data_path, tmp_path), results_dir=tmp_path / "res")
    out = capsys.readouterr().out
    study_dir = next((tmp_path / "res").glob(f"tune-SASRec-tiny-{algo}-*"))
    trials = [json.loads(p.read_text()) for p in sorted((study_dir / "trials").glob("trial-*.json"))]
    assert [t["trial"] for t in trials] == [0, 1, 2] and all(t["status"] == "ok" for t in trials)
    assert all(1 <= t["best_epoch"] <= t["epochs"] for t in trials)  # 1-based, as the run file's
    assert all(f"epochs, best {t['best_epoch']}, " in out for t in trials)
    if algo == "grid":
        assert [t["params"]["n_layers"] for t in trials] == [1, 2, 3]
    chosen = max(trials, key=lambda t: t["valid_score"])
    assert best["params"] == chosen["params"] and best["test"] == chosen["test"]
    settings = yaml.safe_load((study_dir / "best.yaml").read_text())
    assert {k: settings[k] for k in chosen["params"]} == chosen["params"] and "data_path" not in settings
    rows = (study_dir / "trials.csv").read_text().splitlines()
    assert len(rows) == 4 and "test" not in rows[0]
    # progress lines show validation only; the test of the chosen trial comes once, at the end
    assert out.count("[trial ") == 3 and out.count("its test:") == 1
    per_trial = out.split("trials sorted by validation")[0]
    assert "metric      valid    (history" in per_trial and "valid      test" not in per_trial


def test_selection_uses_validation_even_when_test_disagrees(tmp_path, tiny_data_path, monkeypatch, capsys):
    fake = {1: (0.30, 0.10), 2: (0.20, 0.50), 3: (0.25, 0.40)}  # n_layers -> (valid, test)

    def fake_run(model, dataset, config_files, overrides, results_dir, result_name, show_test, resume=None):
        assert show_test is False and resume is None  # nothing was interrupted
        valid, test = fake[overrides["n_layers"]]
        return {"best_valid": {"ndcg@20": valid}, "test": {"ndcg@20": test}, "best_valid_score": valid,
                "epochs_run": 1, "checkpoint": None}

    monkeypatch.setattr(T, "run", fake_run)
    best = T.tune(space_file(tmp_path, "n_layers: {choice: [1, 2, 3]}\n"), "SASRec", "tiny", algo="grid",
                  overrides={"data_path": str(tiny_data_path)}, results_dir=tmp_path / "res")
    assert best["params"] == {"n_layers": 1} and best["test"] == {"ndcg@20": 0.10}
    out = capsys.readouterr().out
    table = out.split("trials sorted by validation NDCG@20")[1].splitlines()[2:5]
    assert [line.split()[0] for line in table] == ["1", "3", "2"]


def test_default_data_path_is_the_project_dataset_folder(monkeypatch, tmp_path):
    seen = []

    def stop(name, data_path, **kw):
        seen.append(data_path)
        raise ConfigError("stop here")

    monkeypatch.setattr(T, "prepare_dataset", stop)
    with pytest.raises(ConfigError, match="stop here"):
        T.tune(space_file(tmp_path, "n_layers: {choice: [1, 2]}\n"), "SASRec", "amazon-beauty", algo="grid")
    assert seen == [str(T.DATASET_DIR)]


def test_failed_trial_is_recorded_and_skipped(tmp_path, tiny_data_path, monkeypatch):
    def fake_run(model, dataset, config_files, overrides, results_dir, result_name, show_test, resume=None):
        if overrides["n_layers"] == 2:
            raise FloatingPointError("loss part 'rec' is nan at epoch 0, batch 3")
        return {"best_valid": {"ndcg@20": 0.1}, "test": {"ndcg@20": 0.1}, "best_valid_score": 0.1,
                "epochs_run": 1, "checkpoint": None}

    monkeypatch.setattr(T, "run", fake_run)
    best = T.tune(space_file(tmp_path, "n_layers: {choice: [1, 2]}\n"), "SASRec", "tiny", algo="grid",
                  overrides={"data_path": str(tiny_data_path)}, results_dir=tmp_path / "res")
    assert best["params"] == {"n_layers": 1} and best["n_failed"] == 1
    csv_text = next((tmp_path / "res").glob("tune-*/trials.csv")).read_text()
    assert "fail,\"FloatingPointError: loss part 'rec' is nan at epoch 0, batch 3\"" in csv_text


def test_resumed_trial_counts_the_time_before_the_resume(tmp_path, tiny_data_path, monkeypatch):
    def fake_run(model, dataset, config_files, overrides, results_dir, result_name, show_test, resume=None):
        assert resume == "saved/x.last.pth"
        return {"best_valid": {"ndcg@20": 0.1}, "test": {"ndcg@20": 0.1}, "best_valid_score": 0.1,
                "epochs_run": 9, "best_epoch": 4, "checkpoint": None, "stopped": "time_limit",
                "timings": {"fit_s": 30.0, "run": {"train_s": 1000.0, "valid_s": 50.0}}}

    monkeypatch.setattr(T, "run", fake_run)
    monkeypatch.setattr(T, "interrupted_run", lambda config: (Path("saved/x.last.pth"), 6))
    T.tune(space_file(tmp_path, "n_layers: {choice: [1]}\n"), "SASRec", "tiny", algo="grid",
           overrides={"data_path": str(tiny_data_path)}, results_dir=tmp_path / "res")
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("tune-*/trials/trial-*.json")]
    assert record["resumed"] is True and 1020.0 <= record["time_s"] < 1020.0 + 60
    assert record["stopped"] == "time_limit"  # a trial cut short by --time_limit says so, in trials.csv too
    assert ",9,4,time_limit," in next((tmp_path / "res").glob("tune-*/trials.csv")).read_text()


@pytest.mark.parametrize("algo", ["grid", "random"])
def test_a_search_split_by_trials_merges_into_the_whole_search(tmp_path, tiny_data_path, monkeypatch, capsys, algo):
    def fake_run(model, dataset, config_files, overrides, results_dir, result_name, show_test, resume=None):
        score = overrides["n_layers"] / 10 + overrides.get("learning_rate", 0.0)
        return {"best_valid": {"ndcg@20": score}, "test": {"ndcg@20": score / 2}, "best_valid_score": score,
                "epochs_run": 1, "checkpoint": None}

    monkeypatch.setattr(T, "run", fake_run)
    text = "n_layers: {choice: [1, 2, 3, 4]}\n" + ("" if algo == "grid" else
                                                  "learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n")
    space = space_file(tmp_path, text)
    common = dict(algo=algo, max_trials=4, overrides={"data_path": str(tiny_data_path)})
    whole = T.tune(space, "SASRec", "tiny", results_dir=tmp_path / "whole", **common)
    # two "machines": trial 4 on one, trials 1-3 (given unsorted, one twice) on the other; then merged
    T.tune(space, "SASRec", "tiny", results_dir=tmp_path / "a", trials="4", **common)
    a_dir = next((tmp_path / "a").glob("tune-*"))
    assert [p.name for p in (a_dir / "trials").glob("*.json")] == ["trial-0003.json"]
    assert "trials 1, 2, 3 of 4 not run yet" in (a_dir / "best.yaml").read_text().splitlines()[0]
    assert json.loads((a_dir / "best.json").read_text())["not_run"] == [1, 2, 3]
    T.tune(space, "SASRec", "tiny", results_dir=tmp_path / "b", trials="3,1,2,1", **common)
    b_dir = next((tmp_path / "b").glob("tune-*"))
    assert a_dir.name == b_dir.name  # --trials is not part of the search's identity
    (b_dir / "trials" / "trial-0003.json").write_text((a_dir / "trials" / "trial-0003.json").read_text())
    capsys.readouterr()
    merged = T.tune(space, "SASRec", "tiny", results_dir=tmp_path / "b", **common)
    out = capsys.readouterr().out
    assert "4 of 4 trials already done" in out and "not run yet" not in out
    assert merged == whole

    def records(folder):
        return [{k: t[k] for k in ("trial", "params", "valid_score")} for t in T.Study(
            space, "SASRec", "tiny", algo, overrides=common["overrides"], results_dir=folder).trials()]

    assert records(tmp_path / "b") == records(tmp_path / "whole")
    # a search with a gap (trial 2 missing) fills the gap before going on
    (b_dir / "trials" / "trial-0001.json").unlink()
    study = T.Study(space, "SASRec", "tiny", algo, overrides=common["overrides"], results_dir=tmp_path / "b")
    assert [i for i, _ in study.next_params(study.trials(), 2)] == ([1] if algo == "grid" else [1, 4])


def test_records_added_while_a_part_runs_reach_its_outputs(tmp_path, tiny_data_path, monkeypatch):
    """Two parts of one search share a folder; the part that ends last writes outputs over both."""
    space = space_file(tmp_path, "n_layers: {choice: [1, 2, 3]}\n")
    common = dict(algo="grid", max_trials=3, overrides={"data_path": str(tiny_data_path)}, results_dir=tmp_path)
    study = T.Study(space, "SASRec", "tiny", "grid", overrides=common["overrides"], results_dir=tmp_path)
    other = {"trial": 2, "params": {"n_layers": 3}, "status": "ok", "error": None, "valid": {"ndcg@20": 0.9},
             "test": {"ndcg@20": 0.5}, "valid_score": 0.9, "epochs": 1, "checkpoint": None, "time_s": 1.0}

    def fake_run(model, dataset, config_files, overrides, results_dir, result_name, show_test, resume=None):
        # the other part finishes trial 3 while this part trains trial 1
        (study.dir / "trials" / "trial-0002.json").write_text(json.dumps(other))
        return {"best_valid": {"ndcg@20": 0.1}, "test": {"ndcg@20": 0.05}, "best_valid_score": 0.1,
                "epochs_run": 1, "checkpoint": None}

    monkeypatch.setattr(T, "run", fake_run)
    (study.dir / "trials").mkdir(parents=True)
    best = T.tune(space, "SASRec", "tiny", trials="1", **common)
    assert best["best_trial"] == 2 and best["not_run"] == [2]
    assert "trial 2 of 3 not run yet" in (study.dir / "best.yaml").read_text().splitlines()[0]
    assert [row.split(",")[0] for row in (study.dir / "trials.csv").read_text().splitlines()[1:]] == ["3", "1"]


@pytest.mark.parametrize("algo, trials, message", [
    ("random", "5", r"--trials=5: expected trial numbers between 1 and 4 \(--max_trials\)"),
    ("random", "0,2", "--trials=0,2: expected trial numbers between 1 and 4"),
    ("grid", "x", "--trials=x: expected trial numbers"),
    ("tpe", "2", "--trials: a tpe trial depends on the trials before it"),
])
def test_bad_trials_are_one_line_errors(tmp_path, tiny_data_path, algo, trials, message):
    text = "n_layers: {choice: [1, 2, 3, 4]}\n"
    with pytest.raises(ConfigError, match=message) as e:
        T.tune(space_file(tmp_path, text), "SASRec", "tiny", algo=algo, max_trials=4, trials=trials,
               overrides={"data_path": str(tiny_data_path)}, results_dir=tmp_path / "res")
    assert "\n" not in str(e.value) and not (tmp_path / "res").exists()  # refused before anything is written


def cli(tmp_path, data, space, *extra):
    return [sys.executable, str(REPO / "run_s4rec.py"), f"--tune={space}", "--model=SASRec", "--dataset=tiny",
            f"--data_path={data}", f"--results_dir={tmp_path / 'res'}", f"--checkpoint_dir={tmp_path / 'saved'}",
            "--state=WARNING", *(extra or ("--epochs=1",))]


def test_kill_and_resume_loses_and_repeats_no_trial(tiny_data_path, tmp_path):
    space = space_file(tmp_path, "n_layers: {choice: [1, 2]}\nlearning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n")
    cmd = cli(tmp_path, tiny_data_path, space, "--algo=tpe", "--max_trials=4", "--epochs=3",
              "--stopping_step=5")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.time() + 240
    trials_dir = None
    while time.time() < deadline:
        found = list((tmp_path / "res").glob("tune-*/trials/trial-*.json"))
        if len(found) >= 2:
            trials_dir = found[0].parent
            break
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert trials_dir is not None, "no trial finished in time"
    before = {p.name: p.read_text() for p in trials_dir.glob("trial-*.json")}
    assert 2 <= len(before) < 4
    assert not list(trials_dir.glob("*.tmp*")) and not list(trials_dir.glob(".*"))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{len(before)} of 4 trials already done" in out.stdout
    after = {p.name: p.read_text() for p in trials_dir.glob("trial-*.json")}
    assert sorted(after) == [f"trial-{i:04d}.json" for i in range(4)]
    assert all(after[name] == text for name, text in before.items())  # finished trials were not rerun
    params = [json.loads(t)["params"] for t in after.values()]
    assert len({T.params_key(p) for p in params}) == 4


def test_cli_errors(tiny_data_path, tmp_path, capsys):
    from s4rec_recbole.runner import main

    space = space_file(tmp_path, "n_layers: {choice: [1, 2]}\n")
    common = ["--dataset=tiny", f"--data_path={tiny_data_path}"]
    assert main(common + ["--max_trials=3"]) == 2
    assert "--max_trials needs --tune=SPACE.yaml" in capsys.readouterr().err
    assert main(common + [f"--tune={space}", "--model=SASRec", "--algo=bayes"]) == 2
    assert "--algo=bayes: expected one of" in capsys.readouterr().err
    assert main(common + [f"--tune={space}", "--model=SASRec", "--backend=slurm"]) == 2
    assert "--backend=slurm: expected one of" in capsys.readouterr().err
    assert main(common + [f"--tune={tmp_path / 'none.yaml'}", "--model=SASRec"]) == 2
    assert f"{tmp_path / 'none.yaml'}: no such file" in capsys.readouterr().err
    assert main(common + ["--trials=2"]) == 2
    assert "--trials needs --tune=SPACE.yaml" in capsys.readouterr().err
    assert main(common + [f"--tune={space}", "--model=SASRec", "--algo=grid", "--trials=2", "--backend=ray"]) == 2
    assert "--trials runs chosen trials one after another; drop --backend=ray" in capsys.readouterr().err


def test_space_files_shipped_with_the_project_are_valid(tiny_data_path):
    for path in sorted((REPO / "properties" / "hyper").glob("*.yaml")):
        space = T.load_space(path, path.stem, "tiny", overrides={"data_path": str(tiny_data_path)})
        assert space, path
    s4 = T.load_space(REPO / "properties" / "hyper" / "S4Rec.yaml", "S4Rec", "tiny",
                      overrides={"data_path": str(tiny_data_path)})
    assert s4["n_layers"] == ("choice", [1, 2, 3]) and s4["alpha"] == ("choice", [0.0, 0.01, 0.1, 1.0])
    assert s4["tau1"] == ("choice", [0.1, 1.0]) and len(T.grid(s4)) == 3 * 4 ** 4 * 2 ** 3
    # benchmarks/reproduce.sh tune searches every model over SASRec's encoder space: the same draws for each
    draws = {m: [T.random_params(T.load_space(REPO / "properties" / "hyper" / "SASRec.yaml", m, "tiny",
                                              overrides={"data_path": str(tiny_data_path)}), 2020, i)
                 for i in range(4)]
             for m in ("SASRec", "CL4SRec", "ICLRec", "S4Rec")}
    assert all(d == draws["SASRec"] for d in draws.values()) and len({T.params_key(p) for p in draws["S4Rec"]}) == 4


def test_ray_backend_runs_the_same_trials(tiny_data_path, tmp_path):
    pytest.importorskip("ray.tune", reason="ray[tune] is not installed (requirements.txt pins ray[tune]==2.6.3)")
    space = space_file(tmp_path, "n_layers: {choice: [1, 2]}\nlearning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    out = subprocess.run(cli(tmp_path, tiny_data_path, space, "--algo=random", "--max_trials=3", "--backend=ray",
                             "--epochs=1"),
                         capture_output=True, text=True, env=env, timeout=900)  # ray starts slowly on a loaded CPU
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    study_dir = next((tmp_path / "res").glob("tune-SASRec-tiny-random-*"))
    trials = [json.loads(p.read_text()) for p in sorted((study_dir / "trials").glob("trial-*.json"))]
    assert [t["trial"] for t in trials] == [0, 1, 2] and all(t["status"] == "ok" for t in trials)
    assert all(1 <= t["best_epoch"] <= t["epochs"] for t in trials)  # 1-based, as the run file's
    assert all(f"epochs, best {t['best_epoch']}, " in out.stdout for t in trials)
    space_parsed = T.load_space(space, "SASRec", "tiny", overrides={"data_path": str(tiny_data_path)})
    assert [t["params"] for t in trials] == [T.random_params(space_parsed, 2020, i) for i in range(3)]
    assert (study_dir / "best.yaml").is_file() and "its test:" in out.stdout


def test_shown_path_is_relative_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert T.shown_path(tmp_path / "results" / "best.yaml") == Path("results") / "best.yaml"
    outside = tmp_path.parent / "elsewhere.yaml"
    assert T.shown_path(outside) == outside.resolve()
