import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO


def test_epoch_time_benchmark_runs_on_tiny_data(tiny_data_path, tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "epoch_time.py"), "--dataset=tiny",
           f"--data_path={tiny_data_path}", "--steps=2", "--repeats=1", "--warmup=1", "--batch_size=32",
           "--fractions=0.5", "--n_clusters=8", "--no_memory", f"--out={tmp_path}",
           "--only=SASRec (RecBole as shipped,S4Rec (bucketed,S4Rec-kmeans"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (report,) = tmp_path.glob("epoch_time-tiny-*.md")
    text = report.read_text()
    assert "`S4Rec/SASRec = " in text and "`online/kmeans = " in text and "Machine:" in text
    assert "| 50% (" in text and "| validation s |" in text and "| S4Rec (bucketed, RecBole's GELU) |" in text


def test_publish_results_drops_per_user_arrays(tmp_path, monkeypatch, capsys):
    import json

    sys.path.insert(0, str(REPO / "benchmarks"))
    import publish_results

    run = {"model": "S4Rec", "test": {"hit@5": 0.05}, "per_user": {"user": [1, 2, 3], "rank": [0, 5, 9]},
           "result_file": "x"}
    src = tmp_path / "S4Rec-x.json"
    src.write_text(json.dumps(run))
    monkeypatch.setattr(publish_results, "OUT", tmp_path / "published")
    assert publish_results.main([str(src)]) == 0
    out = json.loads((tmp_path / "published" / "S4Rec-x.json").read_text())
    assert out == {"model": "S4Rec", "test": {"hit@5": 0.05}, "n_users": 3}
    # the per-user arrays are kept beside it, compressed, sorted by user
    (tmp_path / "S4Rec-z.json").write_text(json.dumps({"model": "S4Rec", "per_user": {
        "user": [7, 2, 5], "rank": [70000, 0, 12], "length": [3, 9, 4], "cluster": None}}))
    assert publish_results.main([str(tmp_path / "S4Rec-z.json")]) == 0
    assert (tmp_path / "published" / "per-user" / "S4Rec-z.npz").is_file()
    assert publish_results.load_per_user(tmp_path / "published" / "S4Rec-z.json") == {
        "user": [2, 5, 7], "rank": [0, 12, 70000], "length": [9, 4, 3], "cluster": None}
    assert publish_results.load_per_user(tmp_path / "published" / "old.json") is None
    # a file from before a resumed run's epochs_run counted the epochs before the resume
    curve = [{"epoch": e, "valid_score": v} for e, v in enumerate([0.1, 0.3, 0.2, 0.3])]
    (tmp_path / "old.json").write_text(json.dumps({"epochs_run": 2, "curve": curve}))
    assert publish_results.main([str(tmp_path / "old.json")]) == 0
    old = json.loads((tmp_path / "published" / "old.json").read_text())
    assert (old["epochs_run"], old["epochs_this_process"], old["best_epoch"]) == (4, 2, 4)  # the latest of the tie
    # a file whose best_epoch was written with the first of tied epochs gets the one RecBole's checkpoint holds
    (tmp_path / "tied.json").write_text(json.dumps({"epochs_run": 4, "epochs_this_process": 4, "best_epoch": 2,
                                                    "curve": curve}))
    assert publish_results.main([str(tmp_path / "tied.json")]) == 0
    assert json.loads((tmp_path / "published" / "tied.json").read_text())["best_epoch"] == 4
    # the same run evaluated with the history not masked is published beside it, not over it
    (tmp_path / "S4Rec-y.json").write_text(json.dumps({**run, "protocol": {"mask_history": False}}))
    assert publish_results.main([str(tmp_path / "S4Rec-y.json")]) == 0
    assert (tmp_path / "published" / "unmasked-S4Rec-y.json").is_file()
    assert not (tmp_path / "published" / "S4Rec-y.json").exists()
    assert publish_results.main([str(tmp_path / "missing.json")]) == 2
    assert "cannot read a result JSON" in capsys.readouterr().err


def test_plot_curves_from_results_and_logs(tmp_path, capsys):
    import json

    sys.path.insert(0, str(REPO / "benchmarks"))
    import plot_curves

    run = tmp_path / "run.json"
    run.write_text(json.dumps({"curve": [{"epoch": 0, "train_loss": 9.0, "valid_score": 0.01},
                                         {"epoch": 1, "train_loss": 8.0, "valid_score": 0.03}]}))
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    first.write_text("x INFO  epoch 0 evaluating [time: 1.00s, valid_score: 0.020000]\n"
                     "x INFO  epoch 1 evaluating [time: 1.00s, valid_score: 0.040000]\n")
    second.write_text("x INFO  Checkpoint loaded. Resume training from epoch 1\n"
                      "x INFO  epoch 1 evaluating [time: 1.00s, valid_score: 0.041000]\n"
                      "x INFO  epoch 2 evaluating [time: 1.00s, valid_score: 0.050000]\n")
    assert plot_curves.parse_line(f"A={first}+{second}") == ("A", {0: 0.02, 1: 0.041, 2: 0.05})
    out = tmp_path / "curves.png"
    assert plot_curves.main([f"S4Rec={run}", f"A={first}+{second}", f"--out={out}"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and not list(tmp_path.glob(".*.tmp.png"))
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"test": {}}))
    for bad, message in (("nolabel", "expected LABEL=FILE"), (f"A={old}", "no 'curve' in this result"),
                         (f"A={tmp_path / 'none.log'}", "cannot read"), (f"A={run.with_suffix('.txt')}", "cannot read")):
        assert plot_curves.main([bad, f"--out={out}"]) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "empty.log").write_text("nothing here\n")
    assert plot_curves.main([f"A={tmp_path / 'empty.log'}", f"--out={out}"]) == 2
    assert "expected a RecBole log" in capsys.readouterr().err


def test_publish_a_search_folder(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import publish_results

    name = "tune-M-d-random-abc"
    folder = tmp_path / "results" / name
    (folder / "trials").mkdir(parents=True)
    for i in (0, 2):
        (folder / "trials" / f"trial-000{i}.json").write_text(f'{{"trial": {i}}}\n')
    (folder / "search.json").write_text("{}\n")
    (folder / "best.json").write_text('{"n_trials": 2}\n')
    (folder / "trials.csv").write_text("trial,epochs\n1,5\n3,6\n")
    (folder / "best.yaml").write_text(f"# Use: python run_s4rec.py --dataset=d --model=M "
                                      f"--config_files=results/{name}/best.yaml\n# or ...\nn_layers: 2\n")
    monkeypatch.setattr(publish_results, "REPO", tmp_path)
    monkeypatch.setattr(publish_results, "OUT", tmp_path / "results" / "published")
    target = tmp_path / "results" / "published" / name
    assert publish_results.main([str(folder)]) == 0
    assert sorted(p.name for p in target.iterdir()) == ["best.json", "best.yaml", "search.json", "trial-0000.json",
                                                        "trial-0002.json", "trials.csv"]
    best = (target / "best.yaml").read_text()
    assert f"--config_files=results/published/{name}/best.yaml\n" in best and best.endswith("n_layers: 2\n")
    assert (target / "trials.csv").read_text() == (folder / "trials.csv").read_text()
    # a trial published earlier that the folder lacks: its outputs would not cover it, so nothing is written
    (target / "trial-0001.json").write_text('{"trial": 1}\n')
    (folder / "trials.csv").write_text("changed\n")
    assert publish_results.main([str(folder)]) == 2
    assert "holds trial-0001.json, which" in capsys.readouterr().err
    assert (target / "trials.csv").read_text() != "changed\n"
    # a record added after the search wrote its outputs: they would not cover it
    (target / "trial-0001.json").unlink()
    (folder / "trials" / "trial-0003.json").write_text('{"trial": 3}\n')
    assert publish_results.main([str(folder)]) == 2
    assert "best.json covers 2 trials, trials/ holds 3" in capsys.readouterr().err
    for broken in ("{not json", "[3]"):
        (folder / "best.json").write_text(broken)
        assert publish_results.main([str(folder)]) == 2
        assert f"{folder / 'best.json'}: expected a JSON object with n_trials" in capsys.readouterr().err
    (folder / "best.yaml").unlink()
    assert publish_results.main([str(folder)]) == 2
    assert "missing best.yaml" in capsys.readouterr().err


def test_reproduce_script_names_its_parts():
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "reproduce.sh"), "nope"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "expected a part name, got 'nope'" in proc.stderr
    for part in ("main", "baselines", "unmasked", "ablation", "ksweep", "samples", "sports", "ml-1m", "tune", "all"):
        assert f"reproduce.sh {part} " in proc.stdout, part
    assert proc.stdout.rstrip().endswith("results/tune-<model>-<dataset>-random-<key>/.")  # the whole header


def test_reproduce_script_models_exist():
    """Every model the script names resolves (a typo would stop a part only when its turn comes, hours in)."""
    import re

    from s4rec_recbole.model import resolve_model

    text = "\n".join(line for line in (REPO / "benchmarks" / "reproduce.sh").read_text().splitlines()
                     if not line.startswith("#"))
    lists = dict(re.findall(r"^(\w+)=([\w,+-]+)$", text, re.M))
    lists["m"] = ",".join(re.search(r"for m in ([\w ]+);", text).group(1).split())  # tune's loop over models
    names = re.findall(r"--model=(\S+)", text)
    models = {m for entry in names for m in (lists[entry[1:]] if entry.startswith("$") else entry).split(",")}
    assert {"SASRec-recbole", "SASRec", "S4Rec-noadv"} <= models
    for model in models:
        resolve_model(model)


def test_report_from_existing_run_files(tiny_data_path, tmp_path, capsys, monkeypatch):
    import json

    from conftest import tiny_overrides
    from s4rec_recbole.runner import run

    sys.path.insert(0, str(REPO / "benchmarks"))
    import report

    files = {}
    for model, extra in (("S4Rec", {"n_clusters": 8}), ("SASRec", {})):
        res = run(model, "tiny", overrides=tiny_overrides(tiny_data_path, tmp_path, **extra),
                  results_dir=tmp_path / "runs")
        files[model] = res["result_file"]
    out = tmp_path / "rep"
    assert report.main(["--dataset=tiny", f"--results_dir={out}", f"A={files['S4Rec']}", f"B={files['SASRec']}"]) == 0
    (md,) = out.glob("compare-tiny-*.md")
    text = md.read_text()
    assert "| A | 1 |" in text and "p-value of A vs" in text and "| B |" in text
    assert len(list(out.glob("compare-tiny-*.png"))) == 2
    # the same report from the published files (per-user ranks in published/per-user/)
    import publish_results

    monkeypatch.setattr(publish_results, "OUT", tmp_path / "published")
    assert publish_results.main(list(files.values())) == 0
    published = {m: tmp_path / "published" / Path(f).name for m, f in files.items()}
    assert "per_user" not in json.loads(published["S4Rec"].read_text())
    out2 = tmp_path / "rep2"
    assert report.main(["--dataset=tiny", f"--results_dir={out2}", f"A={published['S4Rec']}",
                        f"B={published['SASRec']}"]) == 0
    (md2,) = out2.glob("compare-tiny-*.md")
    assert md2.read_text() == text
    slim = tmp_path / "slim.json"
    slim.write_text(json.dumps({"dataset": "tiny", "test": {}}))
    for argv, message in (([f"A={slim}"], "no per-user ranks"), (["A"], "expected LABEL=RUN.json"),
                          ([f"A={tmp_path / 'x.json'}"], "cannot read a run JSON"),
                          ([f"A={files['S4Rec']}", "--dataset=other"], "expected only --dataset=other")):
        argv = argv if any(a.startswith("--dataset") for a in argv) else [*argv, "--dataset=tiny"]
        assert report.main([*argv, f"--results_dir={out}"]) == 2
        assert message in capsys.readouterr().err


def test_epoch_time_times_one_encoder_even_with_tuned_models(tmp_path):
    """Beauty ships a tuned SASRec and a tuned ICLRec (3 layers, other dropouts): the speed benchmark still times
    the encoder every model shares, so its model-vs-model ratios compare like with like."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import epoch_time

    from s4rec_recbole.runner import build_config

    keys = ("n_layers", "hidden_dropout_prob", "attn_dropout_prob")
    s4rec = build_config("S4Rec", "amazon-beauty", overrides={"data_path": str(tmp_path)})
    for model, overrides, _ in epoch_time.SETTINGS.values():
        cfg = build_config(model, "amazon-beauty", overrides=epoch_time.setting_overrides(model, overrides, tmp_path, 256))
        assert [cfg[k] for k in keys] == [s4rec[k] for k in keys], model


def test_plot_sweep_groups_seeds_and_refuses_mixed_runs(tmp_path, capsys):
    import json

    sys.path.insert(0, str(REPO / "benchmarks"))
    import plot_sweep

    def run(name, k, seed, hr5, **extra):
        curve = [{"epoch": e, "valid_score": v} for e, v in enumerate([0.1, 0.3, 0.3, 0.2])]
        test = {"hit@5": hr5, "hit@20": 0.2, "ndcg@5": 0.03, "ndcg@20": 0.05}
        config = {"model": "S4Rec", "dataset": "d", "n_clusters": k, "seed": seed, "alpha": 0.01,
                  "checkpoint_dir": str(tmp_path / name), **extra}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"config": config, "test": test, "curve": curve, "epochs_run": 1}))
        return str(path)

    runs = [run("a", 128, 1, 0.05), run("b", 32, 1, 0.04), run("c", 128, 2, 0.07)]
    groups = plot_sweep.collect(runs, "n_clusters")
    assert list(groups) == [32, 128]  # sorted by value, seeds of one value together
    text = plot_sweep.table(groups, "n_clusters", [plot_sweep.parse_reference("paper HR@5=32:0.051,512:0.0455")])
    row = next(line for line in text.splitlines() if line.startswith("| 128 |"))
    # mean and sample std over the two seeds (0.05, 0.07), best in bold; epochs from the curve, latest tied best
    assert "| 1, 2 | **0.0600 +- 0.0141** |" in row and "| 4 (3), 4 (3) |" in row and row.endswith("| |")
    assert next(line for line in text.splitlines() if line.startswith("| 32 |")).endswith("| 0.0510 |")

    # the x axis ticks our values and the references' and turns logarithmic over a factor of 8 (K 32 ... 512)
    assert plot_sweep.x_axis([32, 128], [("p", {32: 0.05, 512: 0.04})]) == ([32, 128, 512], True)
    assert plot_sweep.x_axis([32, 128], [("p", {64: 0.05})]) == ([32, 64, 128], False)
    assert plot_sweep.x_axis([0, 1, 2]) == ([0, 1, 2], False)

    out = tmp_path / "sweep" / "k"
    assert plot_sweep.main(runs + ["--key=n_clusters", f"--out={out}", "--reference=p=32:0.05"]) == 0
    assert out.with_suffix(".png").stat().st_size > 0 and out.with_suffix(".md").read_text() == \
        plot_sweep.table(groups, "n_clusters", [("p", {32: 0.05})])

    bad = {
        "differs from": runs + [run("d", 64, 1, 0.05, alpha=0.1)],  # a second setting moves
        "a second run with n_clusters=128 and seed 1": runs + [run("e", 128, 1, 0.05)],
        "has no key 'n_layer'": runs,
    }
    for message, files in bad.items():
        key = "n_layer" if "n_layer" in message else "n_clusters"
        assert plot_sweep.main(files + [f"--key={key}", f"--out={tmp_path / 'x'}"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert plot_sweep.main([run("f", 32, 1, 0.05), "--key=n_clusters", "--out=x", "--reference=p=32"]) == 2
    assert "not VALUE:SCORE" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


def test_distill_diag_reports_teacher_and_student_entropies(tiny_data_path, tmp_path, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import distill_diag

    from conftest import tiny_overrides
    from s4rec_recbole.runner import run

    over = tiny_overrides(tiny_data_path, tmp_path, n_clusters=8)
    s4 = run("S4Rec", "tiny", overrides=over, results_dir=tmp_path / "res")["checkpoint"]
    capsys.readouterr()
    assert distill_diag.main([s4, "--tau3=1.0,0.1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "prototypes used" in out[0] and "uniform entropy ln 64 = 4.159" in out[0]
    assert out[1].startswith("tau3=1: teacher entropy") and out[2].startswith("tau3=0.1: teacher entropy")
    entropies = [float(line.split("teacher entropy ")[1].split(",")[0]) for line in out[1:3]]
    assert 0 < entropies[1] < entropies[0] <= 4.159 + 1e-3  # a lower temperature sharpens the teacher
    assert out[0].endswith("ckd_space raw")
    cos = run("S4Rec", "tiny", overrides=dict(over, ckd_space="cos"), results_dir=tmp_path / "res")["checkpoint"]
    capsys.readouterr()
    assert distill_diag.main([cos, "--tau3=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("ckd_space cos")
    # unit vectors at temperature 1: both distributions are within a few hundredths of uniform
    assert float(out[1].split("teacher entropy ")[1].split(",")[0]) > 4.159 - 0.05
    over.pop("n_clusters")
    sas = run("SASRec", "tiny", overrides=over, results_dir=tmp_path / "res")["checkpoint"]
    capsys.readouterr()
    for argv, message in (([sas], "a SASRec checkpoint; expected S4Rec"), ([s4, "--tau3=0"], "--tau3=0: expected"),
                          ([str(tmp_path / "no.pth")], "no such file")):
        try:
            distill_diag.main(argv)
        except SystemExit as e:
            assert e.code == 2
        err = capsys.readouterr().err
        assert message in err, err


def test_length_probe_auc_on_separable_and_random_embeddings():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import length_probe

    rng = np.random.default_rng(0)
    is_head = rng.random(600) < 0.25
    noise = rng.normal(size=(600, 8))
    assert 0.4 < length_probe.probe_auc(noise, is_head) < 0.6       # nothing to read: chance
    signal = noise.copy()
    signal[:, 3] += 3.0 * is_head                                   # one direction carries the label
    assert length_probe.probe_auc(signal, is_head) > 0.95


def test_length_probe_on_checkpoints(tiny_data_path, tmp_path, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import length_probe

    from conftest import tiny_overrides
    from s4rec_recbole.runner import run

    over = tiny_overrides(tiny_data_path, tmp_path, n_clusters=8)
    s4 = run("S4Rec", "tiny", overrides=over, results_dir=tmp_path / "res")["checkpoint"]
    noadv = run("S4Rec", "tiny", overrides=dict(over, **{"lambda": 0.0}), results_dir=tmp_path / "res")["checkpoint"]
    over.pop("n_clusters")
    sas = run("SASRec", "tiny", overrides=over, results_dir=tmp_path / "res")["checkpoint"]
    capsys.readouterr()
    assert length_probe.main([s4, noadv, sas, "--folds=3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "S4Rec" in out[0] and "SASRec" in out[2]
    aucs = [float(line.split("linear probe AUC ")[1][:5]) for line in out]
    assert all(0 <= a <= 1 for a in aucs)
    assert "adversary's own classifier AUC" in out[0]
    assert "adversary" not in out[1] and "adversary" not in out[2]  # untrained (lambda 0) or absent
    for argv, message in (([s4, "--folds=1"], "--folds=1: expected an integer >= 2"),
                          ([str(tmp_path / "no.pth")], "no such file")):
        with pytest.raises(SystemExit) as e:
            length_probe.main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_parallel_runs_trains_side_by_side_and_packs_results(tmp_path):
    import json
    import tarfile

    from conftest import write_benchmark

    source = write_benchmark(tmp_path / "par.txt")

    def slice_(out, resume=None):
        proc = subprocess.run(
            ["bash", str(REPO / "benchmarks" / "parallel_runs.sh"), str(out), "par", "2020", "1e-6", "SASRec,CL4SRec",
             f"--data_source={source}", f"--data_path={tmp_path / 'data'}", "--epochs=4", "--train_batch_size=64",
             "--use_gpu=False", "--state=WARNING"],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "PYTHON": sys.executable, "THREADS": "1", **({"RESUME": str(resume)} if resume else {})})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "all 2 trainings ended" in proc.stdout
        with tarfile.open(out / "runs.tar.gz") as tar:
            names = tar.getnames()
            results = {r["model"]: r for r in (json.load(tar.extractfile(n)) for n in names if n.endswith(".json"))}
        assert sorted(results) == ["CL4SRec", "SASRec"] and {"logs/SASRec.log", "logs/CL4SRec.log"} <= set(names)
        return proc.stdout, results

    _, first = slice_(tmp_path / "out")
    # the time limit ended both after their first epoch; each one's best and .last.pth came back, gzipped
    assert all(r["stopped"] == "time_limit" and r["epochs_run"] == 1 for r in first.values())
    packed = sorted(p.name for p in (tmp_path / "out").glob("*.pth.gz"))
    assert len(packed) == 4 and sum(".last." in p for p in packed) == 2
    assert (tmp_path / "data" / "par" / "par.inter").is_file()
    # the next slice continues both from there
    log, second = slice_(tmp_path / "out2", resume=tmp_path / "out")
    assert "SASRec continues from" in log and "CL4SRec continues from" in log
    for model, r in second.items():
        assert r["epochs_run"] == 2 and r["epochs_this_process"] == 1 and r["resumed_from"]
        assert [e["epoch"] for e in r["curve"]] == [0, 1] and r["curve"][0] == first[model]["curve"][0]
