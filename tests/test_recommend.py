import csv
import subprocess
import sys

import pytest
import torch
from recbole.data import create_dataset

from conftest import REPO, tiny_overrides
from s4rec_recbole import load
from s4rec_recbole.recommend import RecommendError, Recommender
from s4rec_recbole.runner import build_config, main, prepare_data
from s4rec_recbole.trainer import S4RecTrainer


@pytest.fixture(scope="module")
def trained(tiny_data_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rec")
    cfg = build_config("S4Rec", "tiny", overrides=tiny_overrides(tiny_data_path, tmp, n_clusters=8))
    ds, train, valid, _ = prepare_data(cfg)
    model = cfg.model_class(cfg, train._dataset)
    trainer = S4RecTrainer(cfg, model)
    trainer.fit(train, valid, saved=True)
    model.load_state_dict(torch.load(trainer.saved_model_file, weights_only=True)["state_dict"])
    return Recommender(model, create_dataset(cfg), cfg), trainer.saved_model_file, tmp


def test_reloaded_checkpoint_recommends_like_the_model_in_memory(trained):
    in_memory, path, _ = trained
    reloaded = load(path)
    for user in ("1", "17", "120"):
        a, b = in_memory.recommend(user=user, topk=10), reloaded.recommend(user=user, topk=10)
        assert [i for i, _ in a] == [i for i, _ in b]
        assert all(abs(x - y) < 1e-4 for (_, x), (_, y) in zip(a, b))
    a, b = reloaded.recommend(items=["3", "5", "7"], topk=5), in_memory.recommend(items=["3", "5", "7"], topk=5)
    assert [i for i, _ in a] == [i for i, _ in b] and [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-4)


def test_id_maps_round_trip_and_history(trained, tiny_data_path):
    rec, _, _ = trained
    line = (tiny_data_path / "tiny.txt").read_text().splitlines()[16].split()
    user, items = line[0], line[1:]
    uid = rec.user_id(user)
    assert rec.item_tokens(rec.history[uid]) == items  # full history, in time order, external ids
    assert rec.item_tokens(rec.item_ids(items)) == items


def test_exclude_history(trained, tiny_data_path):
    rec, _, _ = trained
    line = (tiny_data_path / "tiny.txt").read_text().splitlines()[0].split()
    top = rec.recommend(user=line[0], topk=60, exclude_history=True)
    assert not set(i for i, _ in top) & set(line[1:])
    assert len(top) == 60 - len(line[1:])  # every other item, never an excluded one
    top_all = rec.recommend(user=line[0], topk=60)
    assert set(i for i, _ in top_all) & set(line[1:])  # without the flag, history items do appear


def test_bad_ids(trained, caplog):
    rec, _, _ = trained
    with pytest.raises(RecommendError, match="unknown user '99999'"):
        rec.recommend(user="99999")
    with caplog.at_level("WARNING"):
        top = rec.recommend(items=["3", "nope", "5"], topk=3)
    assert len(top) == 3 and "skipped 1 unknown items: nope" in caplog.text
    with pytest.raises(RecommendError, match="none of the items"):
        rec.recommend(items=["nope"])
    with pytest.raises(RecommendError, match="exactly one of user or items"):
        rec.recommend()


def test_cli_user_and_all_users(trained, capsys):
    _, path, tmp = trained
    assert main(["--recommend", f"--checkpoint={path}", "--user=5", "--topk=3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "rank\titem_id\tscore" and len(out) == 4
    target = tmp / "recs.csv"
    assert main(["--recommend", f"--checkpoint={path}", "--all_users", f"--output={target}", "--topk=2",
                 "--exclude_history"]) == 0
    rows = list(csv.DictReader(open(target)))
    assert len(rows) == 2 * 120 and rows[0]["rank"] == "1"
    assert main(["--recommend", f"--checkpoint={path}", "--user=99999"]) == 2
    assert "unknown user '99999'" in capsys.readouterr().err
    assert main(["--recommend", f"--checkpoint={path}"]) == 2
    assert "exactly one of" in capsys.readouterr().err


class Boom:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"model": "S4Rec", "state_dict": {}, "evil": Boom()}, bad)
    with pytest.raises(RecommendError, match="cannot load the checkpoint safely"):
        load(bad)
    code = f"import s4rec_recbole; s4rec_recbole.load({str(bad)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert "pwned" not in proc.stdout and proc.returncode != 0
