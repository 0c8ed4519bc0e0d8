import subprocess
import sys

from conftest import REPO


def test_epoch_time_benchmark_runs_on_tiny_data(tiny_data_path, tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "epoch_time.py"), "--dataset=tiny",
           f"--data_path={tiny_data_path}", "--steps=2", "--repeats=1", "--warmup=1", "--batch_size=32",
           "--fractions=0.5", "--n_clusters=8", "--no_memory", f"--out={tmp_path}",
           "--only=SASRec (RecBole as shipped,S4Rec (bucketed),S4Rec-kmeans"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (report,) = tmp_path.glob("epoch_time-tiny-*.md")
    text = report.read_text()
    assert "`S4Rec/SASRec = " in text and "`online/kmeans = " in text and "Machine:" in text
    assert "| 50% (" in text


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
    assert publish_results.main([str(tmp_path / "missing.json")]) == 2
    assert "cannot read a result JSON" in capsys.readouterr().err
