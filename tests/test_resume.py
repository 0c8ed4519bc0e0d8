import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO

KILLER = textwrap.dedent('''
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    from s4rec_recbole import trainer as T
    original = T.S4RecTrainer._checked_loss

    def killing(self, epoch_idx):
        loss = original(self, epoch_idx)
        seen = [0]

        def wrapped(interaction):
            if epoch_idx == 1 and seen[0] == 2:
                os.kill(os.getpid(), signal.SIGKILL)  # mid-epoch, no chance to clean up
            seen[0] += 1
            return loss(interaction)
        return wrapped

    T.S4RecTrainer._checked_loss = killing
    from s4rec_recbole.runner import main
    sys.exit(main(sys.argv[1:]))
''')


def untimed(curve):
    """A training curve without its seconds, which differ between two runs of the same training."""
    return [{k: v for k, v in e.items() if k not in ("train_s", "valid_s")} for e in curve]


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tiny_data_path, tmp_path):
    common = ["--dataset=tiny", f"--data_path={tiny_data_path}", "--epochs=3", "--train_batch_size=64",
              "--n_clusters=8", "--use_gpu=False", "--state=WARNING"]
    run = lambda args, cwd: subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600)

    full = tmp_path / "full"
    full.mkdir()
    proc = run([str(REPO / "run_s4rec.py"), *common, f"--results_dir={full}", f"--checkpoint_dir={full}"], full)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (expected,) = [json.loads(p.read_text()) for p in full.glob("S4Rec-*.json")]

    part = tmp_path / "part"
    part.mkdir()
    killer = part / "killer.py"
    killer.write_text(KILLER.format(repo=str(REPO)))
    proc = run([str(killer), *common, f"--results_dir={part}", f"--checkpoint_dir={part}"], part)
    assert proc.returncode == -9  # SIGKILL in epoch 1
    (last,) = part.glob("*.last.pth")
    assert not list(part.glob("*.tmp")) and not list(part.glob("S4Rec-*.json"))
    proc = run([str(REPO / "run_s4rec.py"), *common, f"--results_dir={part}", f"--checkpoint_dir={part}",
                f"--resume={last}"], part)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (resumed,) = [json.loads(p.read_text()) for p in part.glob("S4Rec-*.json")]
    assert resumed["epochs_this_process"] == 2  # epochs 1 and 2: nothing lost but the epoch in flight
    assert resumed["epochs_run"] == expected["epochs_run"] == 3 and resumed["best_epoch"] == expected["best_epoch"]
    assert resumed["test"] == expected["test"] and resumed["best_valid"] == expected["best_valid"]
    # the training curve (mean loss parts per batch, validation score) spans the interruption
    assert [c["epoch"] for c in expected["curve"]] == [0, 1, 2] and len(expected["curve"][0]["train_loss"]) == 5
    assert untimed(resumed["curve"]) == untimed(expected["curve"])
    # the run's seconds span the interruption too: this process trained 2 epochs, the run 3
    assert len(resumed["timings"]["epoch_train_s"]) == 2 and resumed["timings"]["run"]["epochs_timed"] == 3
    assert resumed["timings"]["run"]["train_s"] == pytest.approx(sum(e["train_s"] for e in resumed["curve"]), abs=1e-2)
    assert resumed["curve"][0]["train_s"] > 0 and resumed["curve"][0]["valid_s"] > 0


def test_run_timings_sum_the_timed_epochs_of_a_curve():
    from s4rec_recbole.trainer import run_timings
    curve = [{"epoch": 0, "valid_score": 0.1},  # an epoch from a checkpoint written before curves kept seconds
             {"epoch": 1, "valid_score": 0.2, "train_s": 10.0, "valid_s": 2.0},
             {"epoch": 2, "valid_score": 0.3, "train_s": 14.0, "valid_s": 1.0}]
    assert run_timings(curve) == {"epochs_timed": 2, "train_s": 24.0, "valid_s": 3.0, "mean_epoch_train_s": 12.0}
    assert run_timings(curve[:1]) is None and run_timings([]) is None


def test_resume_missing_file_is_an_error(tiny_data_path, tmp_path, capsys):
    from s4rec_recbole.runner import main

    assert main(["--dataset=tiny", f"--data_path={tiny_data_path}", f"--resume={tmp_path}/nope.last.pth"]) == 2
    assert f"--resume={tmp_path}/nope.last.pth: no such file" in capsys.readouterr().err


def test_killed_comparison_resumes_its_interrupted_run(tiny_data_path, tmp_path):
    """Re-running a killed comparison continues the killed training from its .last.pth (not from scratch)."""
    from s4rec_recbole.compare import interrupted_run
    from s4rec_recbole.runner import build_config

    common = ["--dataset=tiny", "--model=S4Rec", "--seeds=1", f"--data_path={tiny_data_path}", "--epochs=3",
              "--train_batch_size=64", "--n_clusters=8", "--use_gpu=False", "--state=WARNING"]
    run = lambda args, cwd: subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    results = {}
    for name in ("full", "part"):
        folder = tmp_path / name
        folder.mkdir()
        args = [*common, f"--results_dir={folder}", f"--checkpoint_dir={folder / 'saved'}"]
        if name == "part":
            (folder / "killer.py").write_text(KILLER.format(repo=str(REPO)))
            assert run([str(folder / "killer.py"), *args], folder).returncode == -9
            assert not list((folder / "runs").glob("*.json"))
        proc = run([str(REPO / "run_s4rec.py"), *args], folder)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert ("resuming the interrupted run" in proc.stdout) == (name == "part")
        (results[name],) = [json.loads(p.read_text()) for p in (folder / "runs").glob("S4Rec-*.json")]
        config = build_config("S4Rec", "tiny", overrides={"data_path": str(tiny_data_path), "epochs": 3, "seed": 1,
                                                          "train_batch_size": 64, "n_clusters": 8, "use_gpu": False,
                                                          "state": "WARNING", "checkpoint_dir": str(folder / "saved")})
        assert interrupted_run(config) is None  # finished runs are never resumed
    assert results["part"]["epochs_this_process"] == 2 and results["part"]["resumed_from"]
    assert results["part"]["epochs_run"] == results["full"]["epochs_run"] == 3
    assert results["part"]["test"] == results["full"]["test"]
    assert results["part"]["best_valid"] == results["full"]["best_valid"]
    assert untimed(results["part"]["curve"]) == untimed(results["full"]["curve"])


def test_killed_search_resumes_its_interrupted_trial(tiny_data_path, tmp_path):
    """Re-running a killed search continues the trial that was training from its .last.pth."""
    (tmp_path / "space.yaml").write_text("n_layers: {choice: [1]}\n")
    args = [f"--tune={tmp_path / 'space.yaml'}", "--algo=grid", "--dataset=tiny", "--model=S4Rec",
            f"--data_path={tiny_data_path}", "--epochs=3", "--train_batch_size=64", "--n_clusters=8",
            "--use_gpu=False", "--state=WARNING", f"--results_dir={tmp_path / 'res'}",
            f"--checkpoint_dir={tmp_path / 'saved'}"]
    run = lambda script: subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                                        cwd=tmp_path, timeout=600)
    (tmp_path / "killer.py").write_text(KILLER.format(repo=str(REPO)))
    assert run(str(tmp_path / "killer.py")).returncode == -9
    assert not list((tmp_path / "res").glob("tune-*/trials/*.json"))
    proc = run(str(REPO / "run_s4rec.py"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trial 1: resuming the interrupted run" in proc.stdout
    (trial,) = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("tune-*/trials/trial-0000.json")]
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("tune-*/runs/trial-0000.json")]
    assert trial["status"] == "ok" and trial["epochs"] == result["epochs_run"] == 3
    assert result["epochs_this_process"] == 2 and result["resumed_from"]


def test_a_run_stopped_by_time_limit_continues_under_the_same_comparison(tiny_data_path, tmp_path):
    """A comparison run that --time_limit stopped is continued, not reused, by the same command (under any
    limit), ends as the uninterrupted run does, and is then reused; without its .last.pth it is reused as is."""
    from conftest import tiny_overrides
    from s4rec_recbole.compare import load_or_run

    logs = []
    over = tiny_overrides(tiny_data_path, tmp_path, epochs=3, n_clusters=8)
    runs = tmp_path / "runs"
    limited = dict(over, time_limit=1e-6)  # stops after every epoch
    first = load_or_run("S4Rec", "tiny", 1, (), limited, runs, log=logs.append)
    assert first["stopped"] == "time_limit" and first["epochs_run"] == 1
    second = load_or_run("S4Rec", "tiny", 1, (), limited, runs, log=logs.append)
    assert logs[-1].startswith("resuming the interrupted run") and second["resumed_from"]
    assert second["stopped"] == "time_limit" and second["epochs_run"] == 2 and second["epochs_this_process"] == 1
    third = load_or_run("S4Rec", "tiny", 1, (), over, runs, log=logs.append)  # no limit: to the end
    assert logs[-1].startswith("resuming the interrupted run") and third["stopped"] == "epochs"
    assert len(list(runs.glob("*.json"))) == 1  # each continuation replaced the stored result
    full = load_or_run("S4Rec", "tiny", 1, (), dict(over, checkpoint_dir=str(tmp_path / "other")), tmp_path / "o")
    assert third["epochs_run"] == full["epochs_run"] == 3
    assert third["test"] == full["test"] and untimed(third["curve"]) == untimed(full["curve"])
    again = load_or_run("S4Rec", "tiny", 1, (), limited, runs, log=logs.append)
    assert again["run_id"] == third["run_id"] and again["test"] == third["test"]
    assert logs[-1].startswith("reusing")

    for path in (tmp_path / "saved").glob("*.last.pth"):  # a limited run whose checkpoint is gone
        path.unlink()
    (stored,) = runs.glob("*.json")
    stored.write_text(json.dumps(dict(third, stopped="time_limit")))
    assert load_or_run("S4Rec", "tiny", 1, (), over, runs, log=logs.append)["epochs_run"] == 3
    assert "time_limit stopped it and its .last.pth is not in" in logs[-1]


def test_checkpoints_moved_to_another_folder_still_resume(tiny_data_path, tmp_path, capsys):
    """A .last.pth and its best checkpoint carried together to another folder (another machine, a GPU lease)
    continue there; without the best checkpoint the resume is a one-line error."""
    import shutil

    from conftest import tiny_overrides
    from s4rec_recbole.runner import main, run

    over = tiny_overrides(tiny_data_path, tmp_path, epochs=2, n_clusters=8, time_limit=1e-6)
    first = run("S4Rec", "tiny", overrides=over, results_dir=tmp_path / "a")
    assert first["stopped"] == "time_limit"
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "saved", moved)
    (last,) = moved.glob("*.last.pth")
    done = run("S4Rec", "tiny", overrides=dict(over, time_limit=0, checkpoint_dir=str(moved)),
               results_dir=tmp_path / "b", resume=str(last))
    assert done["stopped"] == "epochs" and done["epochs_run"] == 2 and done["epochs_this_process"] == 1
    assert Path(done["checkpoint"]).parent == moved and not (tmp_path / "saved").exists()

    (best,) = [p for p in moved.glob("*.pth") if not p.name.endswith(".last.pth")]
    best.unlink()
    args = ["--dataset=tiny", "--model=S4Rec", f"--data_path={tiny_data_path}", "--n_clusters=8", "--epochs=3",
            "--use_gpu=False", "--state=WARNING", f"--checkpoint_dir={moved}", f"--results_dir={tmp_path / 'c'}", f"--resume={last}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"its best checkpoint {best} is missing" in err[-1] and "Traceback" not in "".join(err), err
