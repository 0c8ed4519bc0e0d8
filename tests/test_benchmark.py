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
