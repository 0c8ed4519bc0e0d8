import json
import os
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_overrides
from s4rec_recbole.config import ConfigError, parse_value
from s4rec_recbole.runner import UsageError, build_config, main, parse_args, prepare_data, run
from s4rec_recbole.trainer import S4RecTrainer, history_matrices, load_checkpoint


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("1e-3") == 0.001 and parse_value("True") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("none") is None
    assert parse_value("__import__('os')") == "__import__('os')"  # never evaluated


def test_parse_args_errors():
    assert parse_args(["--dataset=a", "--epochs=3"]) == {"dataset": "a", "epochs": 3}
    with pytest.raises(UsageError, match="expected --key=value"):
        parse_args(["--epochs", "3"])
    with pytest.raises(UsageError, match="given twice"):
        parse_args(["--epochs=3", "--epochs=4"])


def test_precedence_and_unknown_keys(tiny_data_path, tmp_path):
    cfg = build_config("S4Rec", "tiny", overrides=tiny_overrides(tiny_data_path))
    assert cfg["n_clusters"] == 128 and cfg["train_neg_sample_args"]["distribution"] == "none"
    assert cfg["valid_metric"] == "NDCG@20" and cfg["mask_history"] is True
    user = tmp_path / "u.yaml"
    user.write_text("n_clusters: 16\nalpha: 0.5\n")
    cfg = build_config("S4Rec", "tiny", [user], tiny_overrides(tiny_data_path, alpha=0.2))
    assert cfg["n_clusters"] == 16 and cfg["alpha"] == 0.2  # file beats model yaml, command line beats file
    with pytest.raises(ConfigError, match="unknown config key 'n_clusterz' \\(from command line\\)"):
        build_config("S4Rec", "tiny", overrides=tiny_overrides(tiny_data_path, n_clusterz=3))
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'learning_rat' \\(from .*bad.yaml\\)"):
        build_config("SASRec", "tiny", [bad], tiny_overrides(tiny_data_path))
    with pytest.raises(ConfigError, match="bad value for 'epochs'.*'ten'; expected an integer"):
        build_config("SASRec", "tiny", overrides=tiny_overrides(tiny_data_path, epochs="ten"))
    with pytest.raises(ConfigError, match="unknown model 'SASRek'; did you mean 'SASRec'\\? accepted: .*S4Rec.*SASRec"):
        build_config("SASRek", "tiny")


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["--dataset=tiny", f"--data_path={tmp_path}", "--model=Nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert main(["--epochs=1"]) == 2
    assert "missing --dataset" in capsys.readouterr().err


def test_sasrec_end_to_end_through_cli(tiny_source, tmp_path):
    cmd = [sys.executable, str(REPO / "run_s4rec.py"), "--dataset=tiny", "--model=SASRec",
           f"--data_source={tiny_source}", f"--data_path={tmp_path / 'ds'}", "--epochs=1",
           f"--results_dir={tmp_path / 'res'}", f"--checkpoint_dir={tmp_path / 'saved'}",
           "--train_batch_size=64", "--use_gpu=False"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ndcg@20" in proc.stdout and "history masked" in proc.stdout
    (result_file,) = (tmp_path / "res").glob("SASRec-tiny-*.json")
    result = json.loads(result_file.read_text())
    assert result["epochs_run"] == 1 and result["protocol"]["mask_history"] is True
    assert set(result["test"]) == {f"{m}@{k}" for m in ("hit", "ndcg") for k in (5, 10, 20)}
    ckpt = load_checkpoint(result["checkpoint"])  # weights_only=True
    assert ckpt["model"] == "SASRec" and isinstance(ckpt["config"], dict)
    assert torch.load(result["checkpoint"], weights_only=True)["state_dict"].keys() == ckpt["state_dict"].keys()


def test_anomaly_detection_stays_off():
    code = ("import torch, s4rec_recbole, importlib, pkgutil, recbole.model.sequential_recommender as s\n"
            "for m in pkgutil.iter_modules(s.__path__): importlib.import_module(s.__name__ + '.' + m.name)\n"
            "from s4rec_recbole import runner\n"
            "print(torch.is_anomaly_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
    assert not torch.is_anomaly_enabled()


class ScoreTable(torch.nn.Module):
    """A stand-in model whose scores are fixed per item (history items best, then the targets)."""

    def __init__(self, scores):
        super().__init__()
        self.scores = scores
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def full_sort_predict(self, interaction):
        return self.scores.expand(len(interaction), -1).clone()

    def other_parameter(self):
        return None

    def load_other_parameter(self, para):
        pass


def test_mask_history_hand_checked(tmp_path):
    src = tmp_path / "h.txt"
    # user 1: train 1 2 3, valid 4, test 5; user 2: train 6 7 8, valid 9, test 10
    src.write_text("1 1 2 3 4 5\n2 6 7 8 9 10\n")
    from s4rec_recbole.data import convert

    convert(src, "h", tmp_path)
    results = {}
    for masked in (True, False):
        cfg = build_config("SASRec", "h", overrides=tiny_overrides(tmp_path, topk=[1, 5], mask_history=masked))
        _, train, valid, test = prepare_data(cfg)
        ds = train._dataset

        def tok(i, ds=ds):
            return int(ds.token2id(ds.iid_field, str(i)))

        valid_hist, test_hist = history_matrices(train, valid)
        u1 = int(ds.token2id(ds.uid_field, "1"))
        assert sorted(valid_hist[u1].indices.tolist()) == sorted(tok(i) for i in (1, 2, 3))
        assert sorted(test_hist[u1].indices.tolist()) == sorted(tok(i) for i in (1, 2, 3, 4))
        scores = torch.zeros(1, ds.item_num)
        for rank, i in enumerate([1, 2, 3, 6, 7, 8, 4, 9, 5, 10]):  # history items score highest
            scores[0, tok(i)] = 100.0 - rank
        trainer = S4RecTrainer(cfg, ScoreTable(scores))
        results[masked] = (trainer.evaluate(valid, load_best_model=False),
                           trainer.evaluate(test, load_best_model=False))
    (v_m, t_m), (v_u, t_u) = results[True], results[False]
    # masked: user 1's valid target 4 ranks behind 6 7 8 only -> position 4; user 2's 9 behind 1 2 3 4 -> position 5
    assert v_m["hit@1"] == 0.0 and v_m["hit@5"] == 1.0
    assert abs(v_m["ndcg@5"] - (1 / np.log2(5) + 1 / np.log2(6)) / 2) < 1e-4
    assert v_u["hit@5"] == 0.0  # unmasked: six history items are ahead of every target
    # test: user 1's 5 behind 6 7 8 9 (1-4 masked) -> 5th; user 2's 10 behind 1 2 3 4 5 -> 6th
    assert t_m["hit@5"] == 0.5 and t_u["hit@5"] == 0.0
    assert abs(t_m["ndcg@5"] - 0.5 / np.log2(6)) < 1e-4  # RecBole rounds to 4 places


def test_same_seed_same_metrics_and_distinct_run_files(tiny_data_path, tmp_path):
    over = tiny_overrides(tiny_data_path, tmp_path, n_clusters=8)
    a = run("S4Rec", "tiny", overrides=over, results_dir=tmp_path / "res")
    b = run("S4Rec", "tiny", overrides=over, results_dir=tmp_path / "res")
    assert a["test"] == b["test"] and a["best_valid"] == b["best_valid"]
    assert a["checkpoint"] != b["checkpoint"] and a["result_file"] != b["result_file"]


def test_concurrent_runs_in_one_folder_keep_separate_files(tiny_data_path, tmp_path):
    """Two identical runs started together in the same folder: own checkpoints, logs and results."""
    cmd = [sys.executable, str(REPO / "run_s4rec.py"), "--dataset=tiny", "--model=SASRec",
           f"--data_path={tiny_data_path}", "--epochs=2", "--results_dir=res", "--checkpoint_dir=saved"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
    results = [json.loads(f.read_text()) for f in sorted((tmp_path / "res").glob("*.json"))]
    assert len(results) == 2 and results[0]["run_id"] != results[1]["run_id"]
    assert len(list((tmp_path / "saved").glob("*.last.pth"))) == 2
    assert len([f for f in (tmp_path / "saved").glob("*.pth") if not f.name.endswith(".last.pth")]) == 2
    logs = sorted((tmp_path / "log" / "SASRec").glob("*.log"))
    assert len(logs) == 2 and sorted(str(f) for f in logs) == sorted(r["log_file"] for r in results)
    for r in results:
        text = Path(r["log_file"]).read_text()
        assert text.count("epoch 1 training") == 1 and r["checkpoint"] in text
        other = next(o for o in results if o is not r)
        assert other["checkpoint"] not in text


def test_folders_exist_before_recbole_checks_them(tiny_data_path, tmp_path, monkeypatch):
    """RecBole's ensure_dir checks, then creates: of two runs starting together in one folder, the second
    crashed on makedirs (FileExistsError: './log'). The runner makes each folder first, so the check finds it."""
    import recbole.trainer.trainer
    import recbole.utils.logger

    seen = []

    def strict(path):
        assert os.path.isdir(path), f"{path} is not there before RecBole's check"
        seen.append(os.path.normpath(path))

    monkeypatch.setattr(recbole.utils.logger, "ensure_dir", strict)
    monkeypatch.setattr(recbole.trainer.trainer, "ensure_dir", strict)
    monkeypatch.chdir(tmp_path)
    run("SASRec", "tiny", overrides=tiny_overrides(tiny_data_path, tmp_path), results_dir=tmp_path / "res")
    assert {"log", os.path.join("log", "SASRec"), str(tmp_path / "saved")} <= set(seen)


@pytest.mark.parametrize("path", sorted((REPO / "properties" / "dataset").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_dataset_files_are_valid_for_every_model(path, tmp_path):
    """A dataset file applies to every model: each key must be one that every model accepts, in range."""
    from s4rec_recbole.config import read_yaml

    settings = read_yaml(path)
    assert settings, f"{path} is empty"
    for model in ("S4Rec", "SASRec", "CL4SRec", "ICLRec", "S4Rec-kmeans"):
        build_config(model, path.stem, overrides={**settings, "data_path": str(tmp_path)})  # known keys, in range
        cfg = build_config(model, path.stem, overrides={"data_path": str(tmp_path)})
        other = build_config(model, "tiny", overrides={"data_path": str(tmp_path)})
        for key, value in settings.items():
            assert cfg[key] == value  # the dataset file is applied ...
        assert other["length_bucket_pool"] == 0  # ... and only to its dataset


MODEL_DATASET_FILES = sorted((REPO / "properties" / "dataset").glob("*/*.yaml"))


def test_a_variant_file_replaces_its_models_file(tmp_path):
    """On ML-1M, S4Rec's file (whole sequences, mean pooling, cosine) applies to its variants, but S4Rec-SR has its
    own (whole sequences only), which replaces S4Rec's rather than adding to it; the variant's settings stay on top."""
    over = {"data_path": str(tmp_path)}
    noadv, sr = build_config("S4Rec-noadv", "ml-1m", overrides=over), build_config("S4Rec-SR", "ml-1m", overrides=over)
    assert (noadv["train_samples"], noadv["seq_pooling"], noadv["sim"]) == ("sequence", "mean", "cos")
    assert noadv["lambda"] == 0 and noadv["alpha"] > 0
    assert (sr["train_samples"], sr["seq_pooling"], sr["sim"], sr["tau2"]) == ("sequence", "last", "dot", 1.0)
    assert sr["alpha"] == sr["beta1"] == sr["beta2"] == sr["lambda"] == 0
    # a variant with no file of its own on a dataset takes the model's, and none on a dataset with neither
    assert build_config("S4Rec-kmeans", "ml-1m", overrides=over)["seq_pooling"] == "mean"
    assert build_config("S4Rec-SR", "amazon-beauty", overrides=over)["train_samples"] == "prefix"


@pytest.mark.parametrize("path", MODEL_DATASET_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_model_dataset_files_are_valid_and_applied(path, tmp_path):
    """properties/dataset/<dataset>/<model>.yaml: a known model and dataset, known keys in range, applied to
    that model on that dataset only."""
    from s4rec_recbole.config import read_yaml
    from s4rec_recbole.data.prepare import KNOWN_DATASETS

    model, dataset = path.stem, path.parent.name
    assert dataset in KNOWN_DATASETS, f"{path}: no dataset {dataset}"
    settings = read_yaml(path)
    assert settings, f"{path} is empty"
    over = {"data_path": str(tmp_path)}
    cfg = build_config(model, dataset, overrides=over)  # an unknown model, key or value fails here
    for key, value in settings.items():
        assert cfg[key] == value
    base = build_config(model, "tiny", overrides=over)
    assert any(base[key] != value for key, value in settings.items()), f"{path} changes nothing"
    other = next(m for m in ("S4Rec", "CL4SRec", "SASRec") if not (path.parent / f"{m}.yaml").is_file())
    other_cfg = build_config(other, dataset, overrides=over)
    assert any(other_cfg[key] != value for key, value in settings.items() if key in other_cfg)


@pytest.mark.parametrize("path", MODEL_DATASET_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_model_dataset_files_are_published_results(path):
    """A model's settings on a dataset are those of a published result that the file's comment names, so the
    README can cite it: the best trial of its search there (results/published/tune-<model>-<dataset>-*/best.yaml)
    or a published run of that model there whose configuration has every setting of the file."""
    import json

    from s4rec_recbole.config import read_yaml

    model, dataset = path.stem, path.parent.name
    settings, text, published = read_yaml(path), path.read_text(), REPO / "results" / "published"
    searches = [best for best in sorted(published.glob(f"tune-{model}-{dataset}-*/best.yaml"))
                if best.parent.name in text]
    records = [r for r in sorted(published.glob(f"{model}-{dataset}-seed*.json")) if r.name in text]
    assert searches or records, f"{path}: names no published search or run of {model} on {dataset}"
    assert all(read_yaml(best) == settings for best in searches)
    for record in records:
        config = json.loads(record.read_text())["config"]
        assert {k: config.get(k) for k in settings} == settings, record.name


def test_evaluate_a_checkpoint_under_the_other_protocol(tiny_data_path, tmp_path, capsys):
    over = tiny_overrides(tiny_data_path, tmp_path, epochs=2, n_clusters=8)
    trained = run("S4Rec", "tiny", overrides=over, results_dir=tmp_path / "res")
    ckpt = trained["checkpoint"]
    assert main([f"--evaluate={ckpt}", f"--results_dir={tmp_path / 'ev'}", "--state=WARNING"]) == 0
    assert "evaluated" in capsys.readouterr().out
    (same,) = [json.loads(p.read_text()) for p in (tmp_path / "ev").glob("*.json")]
    # same weights, same protocol: the training run's numbers, and no training happened
    assert same["test"] == trained["test"] and same["best_valid"] == trained["best_valid"]
    assert same["epochs_run"] == 0 and same["evaluated_from"] == ckpt and same["curve"] == []
    # the checkpoint's own training comes along: the best one is written before its epoch joins the curve
    assert same["checkpoint_epoch"] == trained["best_epoch"] - 1
    assert same["checkpoint_curve"] == trained["curve"][:trained["best_epoch"] - 1]
    last = Path(ckpt[:-len(".pth")] + ".last.pth")
    assert main([f"--evaluate={last}", f"--results_dir={tmp_path / 'last'}", "--state=WARNING"]) == 0
    (from_last,) = [json.loads(p.read_text()) for p in (tmp_path / "last").glob("*.json")]
    assert from_last["checkpoint_curve"] == trained["curve"] and from_last["checkpoint_epoch"] == 1
    assert same["test_by_group"] == trained["test_by_group"]
    from s4rec_recbole.runner import evaluate

    other = evaluate(ckpt, {"mask_history": False, "state": "WARNING"}, results_dir=tmp_path / "ev2")
    assert other["protocol"]["mask_history"] is False and trained["protocol"]["mask_history"] is True
    assert other["test"] != trained["test"]
    for argv, message in (
            ([f"--evaluate={tmp_path / 'nope.pth'}"], "no such file"),
            ([f"--evaluate={tmp_path / 'res'}"], "no such file"),
            ([f"--evaluate={next((tmp_path / 'res').glob('*.json'))}"], "cannot load the checkpoint safely"),
            ([f"--evaluate={ckpt}", "--dataset=tiny"], "drop --dataset"),
            ([f"--evaluate={ckpt}", "--hidden_size=32", "--state=WARNING"], "weights do not fit")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_keeps_the_variant_name(tiny_data_path, tmp_path):
    """A variant's checkpoint is evaluated (and its result file named) as the variant, not as its class."""
    from s4rec_recbole.runner import evaluate

    over = tiny_overrides(tiny_data_path, tmp_path, epochs=1, n_clusters=8, state="WARNING")
    trained = run("S4Rec-noadv", "tiny", overrides=over, results_dir=tmp_path / "res")
    other = evaluate(trained["checkpoint"], {"mask_history": False, "state": "WARNING"}, results_dir=tmp_path / "ev")
    assert trained["model"] == other["model"] == "S4Rec-noadv"
    assert Path(other["result_file"]).name.startswith("S4Rec-noadv-tiny-seed")
    assert other["config"]["lambda"] == 0.0


def test_best_epoch_is_the_checkpoint_recbole_keeps():
    """On tied (rounded) validation scores RecBole's early stopping keeps the later epoch; best_epoch must name it."""
    from recbole.utils import early_stopping

    from s4rec_recbole.trainer import best_epoch

    scores = [0.05, 0.0831, 0.0829, 0.0831, 0.0824, 0.0831, 0.08]
    curve = [{"epoch": i, "valid_score": s} for i, s in enumerate(scores)]
    best, step, kept = -float("inf"), 0, None
    for i, s in enumerate(scores):
        best, step, _, updated = early_stopping(s, best, step, max_step=10)
        if updated:
            kept = i + 1
    assert best_epoch(curve) == kept == 6
    assert best_epoch([]) is None


def test_model_dataset_file_sits_between_dataset_file_and_user_files(tmp_path, monkeypatch):
    """properties/dataset/<dataset>/<model>.yaml: one model's settings on one dataset (tuned hyperparameters)."""
    import shutil

    import s4rec_recbole.config as config

    props = tmp_path / "properties"
    shutil.copytree(config.PROPERTIES, props)
    monkeypatch.setattr(config, "PROPERTIES", props)
    (props / "dataset" / "tiny.yaml").write_text("n_layers: 1\nlearning_rate: 0.002\n")
    (props / "dataset" / "tiny").mkdir()
    (props / "dataset" / "tiny" / "SASRec.yaml").write_text("n_layers: 3\nattn_dropout_prob: 0.2\n")
    user = tmp_path / "user.yaml"
    user.write_text("attn_dropout_prob: 0.3\n")
    over = {"data_path": str(tmp_path)}

    cfg = build_config("SASRec", "tiny", overrides=over)
    assert (cfg["n_layers"], cfg["attn_dropout_prob"], cfg["learning_rate"]) == (3, 0.2, 0.002)
    cfg = build_config("SASRec", "tiny", config_files=[str(user)], overrides={**over, "n_layers": 4})
    assert (cfg["n_layers"], cfg["attn_dropout_prob"]) == (4, 0.3)  # user file, then command line, win
    cfg = build_config("CL4SRec", "tiny", overrides=over)  # another model: only the dataset file
    assert (cfg["n_layers"], cfg["attn_dropout_prob"]) == (1, 0.5)

    (props / "dataset" / "tiny" / "SASRec.yaml").write_text("n_layer: 3\n")  # a typo is not a new key
    with pytest.raises(ConfigError, match=r"unknown config key 'n_layer' \(from .*tiny/SASRec.yaml\)"):
        build_config("SASRec", "tiny", overrides=over)
    (props / "dataset" / "tiny" / "SASRec.yaml").write_text("n_layers: two\n")
    with pytest.raises(ConfigError, match=r"bad value for 'n_layers' \(from .*tiny/SASRec.yaml\)"):
        build_config("SASRec", "tiny", overrides=over)


@pytest.mark.parametrize("model", ["SASRec", "S4Rec"])
def test_fused_gelu_setting_builds_the_model_and_keeps_the_run_key(tiny_data_path, model):
    from recbole.model.layers import FeedForward

    from s4rec_recbole.compare import run_key
    from s4rec_recbole.model import build_model

    extra = {"n_clusters": 8} if model == "S4Rec" else {}
    acts = {}
    for fused in (True, False):
        cfg = build_config(model, "tiny", overrides=tiny_overrides(tiny_data_path, fused_gelu=fused, **extra))
        _, train, _, _ = prepare_data(cfg)
        net = build_model(cfg, train._dataset)
        acts[fused] = {m.intermediate_act_fn for m in net.modules() if isinstance(m, FeedForward)}
        acts[fused, "key"] = run_key(cfg)
    assert acts[True] == {torch.nn.functional.gelu}
    assert len(acts[False]) == 2 and all(f.__func__ is FeedForward.gelu for f in acts[False])  # one per layer
    assert acts[True, "key"] == acts[False, "key"]  # float rounding only: finished runs and checkpoints still match
    with pytest.raises(ConfigError, match="fused_gelu"):
        build_config(model, "tiny", overrides=tiny_overrides(tiny_data_path, fused_gelu=3, **extra))


def test_time_limit_stops_between_epochs_and_tests_the_best_checkpoint(tiny_data_path, tmp_path):
    over = tiny_overrides(tiny_data_path, tmp_path, epochs=5, n_clusters=8, time_limit=1e-6)
    capped = run("S4Rec", "tiny", overrides=over, results_dir=tmp_path / "res")
    # the first epoch already took longer than the limit: one epoch, then the best checkpoint's test
    assert capped["stopped"] == "time_limit" and capped["epochs_run"] == 1 and len(capped["curve"]) == 1
    assert capped["test"] and capped["best_epoch"] == 1 and Path(capped["checkpoint"]).is_file()
    free = run("S4Rec", "tiny", overrides=dict(over, epochs=2, time_limit=0), results_dir=tmp_path / "res")
    assert free["stopped"] == "epochs" and free["epochs_run"] == 2
    # a limit that is never reached changes nothing
    roomy = run("S4Rec", "tiny", overrides=dict(over, epochs=2, time_limit=1e6), results_dir=tmp_path / "res")
    assert roomy["stopped"] == "epochs" and roomy["test"] == free["test"]
    assert "logical cores" in free["hardware"] or "CUDA" in free["hardware"]


def test_time_limit_bad_values_are_one_line_errors(tiny_data_path, tmp_path):
    for value, message in ((-1, "time_limit=-1: expected a number in"), ("soon", "time_limit")):
        with pytest.raises(ConfigError, match=message):
            build_config("S4Rec", "tiny", overrides=tiny_overrides(tiny_data_path, tmp_path, time_limit=value))
