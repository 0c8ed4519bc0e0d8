import urllib.error

import pytest

from s4rec_recbole.data import DataError, convert, locate_source, prepare_dataset, read_sequences
from s4rec_recbole.data import prepare as prep


def read_inter(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    seqs = {}
    for line in lines[1:]:
        u, i, t = line.split("\t")
        seqs.setdefault(int(u), []).append((float(t), int(i)))
    return {u: [i for _, i in sorted(v)] for u, v in seqs.items()}


def test_round_trip(tiny_source, tmp_path):
    out = convert(tiny_source, "tiny", tmp_path / "ds")
    assert out == tmp_path / "ds" / "tiny" / "tiny.inter"
    expected = {int(l.split()[0]): [int(x) for x in l.split()[1:]] for l in tiny_source.read_text().splitlines()}
    assert read_inter(out) == expected
    assert [p.name for p in out.parent.iterdir()] == ["tiny.inter"]  # no temp file left


def test_timestamp_is_position(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("7 30 10 20\n")
    out = convert(src, "a", tmp_path)
    assert out.read_text().splitlines()[1:] == ["7\t30\t0", "7\t10\t1", "7\t20\t2"]


@pytest.mark.parametrize("content, message", [
    ("1 2 3 4\n2 5 x 7\n", "b.txt:2: token 'x' is not an integer"),
    ("1 2 3 4\n\n2 5 6 7\n", "b.txt:2: empty line"),
    ("1 2 3 4\n1 5 6 7\n", "b.txt:2: user 1 already appeared on line 1"),
    ("1 2 -3 4\n", "b.txt:1: negative id"),
    ("1 2\n2 3\n", "no user with at least 3 items"),
])
def test_bad_input(tmp_path, content, message):
    src = tmp_path / "b.txt"
    src.write_text(content)
    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        read_sequences(src)


def test_short_users_skipped_or_strict(tmp_path, caplog):
    src = tmp_path / "c.txt"
    src.write_text("1 1 2 3\n2 4 5\n3 6 7 8 9\n")
    seqs, skipped = read_sequences(src)
    assert [u for u, _ in seqs] == [1, 3] and skipped == 1
    with caplog.at_level("WARNING"):
        convert(src, "c", tmp_path)
    assert "skipped 1 users" in caplog.text
    with pytest.raises(DataError, match=r"c\.txt:2: user 2 has 2 items; expected at least 3"):
        read_sequences(src, strict=True)


def test_failed_conversion_leaves_existing_file(tmp_path):
    good = tmp_path / "g.txt"
    good.write_text("1 1 2 3\n")
    out = convert(good, "g", tmp_path)
    before = out.read_text()
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1 2 3\n2 a\n")
    with pytest.raises(DataError):
        convert(bad, "g", tmp_path)
    assert out.read_text() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["g.inter"]


def test_atomic_write_cleans_up_on_error(tmp_path, monkeypatch):
    target = tmp_path / "x" / "f.txt"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(prep.os, "replace", boom)
    with pytest.raises(OSError):
        prep.atomic_write_text(target, "data")
    assert list(target.parent.iterdir()) == []


def test_source_lookup_order(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    (shared / "amazon-beauty").mkdir(parents=True)
    shared_file = shared / "amazon-beauty" / "Beauty.txt"
    shared_file.write_text("1 1 2 3\n")
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    (env_dir / "Beauty.txt").write_text("1 1 2 3\n")
    explicit = tmp_path / "mine.txt"
    explicit.write_text("1 1 2 3\n")
    monkeypatch.delenv(prep.SOURCE_ENV, raising=False)
    assert locate_source("amazon-beauty", None, shared) == shared_file
    monkeypatch.setenv(prep.SOURCE_ENV, str(env_dir))
    assert locate_source("amazon-beauty", None, shared) == env_dir / "Beauty.txt"
    assert locate_source("amazon-beauty", str(explicit), shared) == explicit
    with pytest.raises(DataError, match="--data_source=.*nope.txt: no such file"):
        locate_source("amazon-beauty", str(tmp_path / "nope.txt"), shared)


def test_ml1m_prefers_the_copy_that_matches_the_download(tmp_path, monkeypatch):
    monkeypatch.delenv(prep.SOURCE_ENV, raising=False)
    folder = tmp_path / "shared" / "ml-1m"
    folder.mkdir(parents=True)
    (folder / "ml-1m.txt").write_text("1 1 2 3 4\n")
    assert locate_source("ml-1m", None, tmp_path / "shared") == folder / "ml-1m.txt"
    (folder / "ml-1m_item5core.txt").write_text("1 1 2 3\n")
    assert locate_source("ml-1m", None, tmp_path / "shared") == folder / "ml-1m_item5core.txt"
    assert locate_source("ml-1m", str(folder), None) == folder / "ml-1m_item5core.txt"  # a folder: the same order
    assert locate_source("ml-1m", str(folder / "ml-1m.txt"), None) == folder / "ml-1m.txt"  # a file: that file


def test_offline_without_source_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv(prep.SOURCE_ENV, raising=False)

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(prep.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as err:
        prepare_dataset("amazon-beauty", tmp_path / "ds", shared_dir=tmp_path / "none")
    msg = str(err.value)
    assert "\n" not in msg and "--data_source=PATH" in msg and prep.SOURCE_ENV in msg
    assert not (tmp_path / "ds" / "amazon-beauty" / "amazon-beauty.inter").exists()
    raw = tmp_path / "ds" / "amazon-beauty" / "raw"
    assert not raw.exists() or list(raw.iterdir()) == []


class _FakeResponse:
    def __init__(self, data):
        self.data, self.headers = data, {"Content-Length": str(len(data))}

    def read(self, n):
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_checks_sha256(tmp_path, monkeypatch):
    monkeypatch.setattr(prep.urllib.request, "urlopen", lambda *a, **k: _FakeResponse(b"1 1 2 3\n"))
    with pytest.raises(DataError, match="sha256 .* does not match"):
        prep.download("amazon-beauty", tmp_path, show_progress=False)
    assert list(tmp_path.iterdir()) == []
    good = b"1 1 2 3\n2 4 5 6\n"
    monkeypatch.setitem(prep.KNOWN_DATASETS, "amazon-beauty", prep.BenchmarkSource(
        "Beauty.txt", "http://example.invalid/Beauty.txt", prep.hashlib.sha256(good).hexdigest()))
    monkeypatch.setattr(prep.urllib.request, "urlopen", lambda *a, **k: _FakeResponse(good))
    monkeypatch.delenv(prep.SOURCE_ENV, raising=False)
    out = prepare_dataset("amazon-beauty", tmp_path / "ds", shared_dir=None)
    assert read_inter(out) == {1: [1, 2, 3], 2: [4, 5, 6]}


def test_unknown_dataset_without_source(tmp_path, monkeypatch):
    monkeypatch.delenv(prep.SOURCE_ENV, raising=False)
    with pytest.raises(DataError, match="unknown dataset 'nope'.*amazon-beauty"):
        prepare_dataset("nope", tmp_path)


@pytest.mark.parametrize("name, filename, users, interactions, items", [
    ("amazon-beauty", "Beauty.txt", 22363, 198502, 12101),
    ("amazon-sports-outdoors", "Sports_and_Outdoors.txt", 35598, 296337, 18357),
    ("ml-1m", "ml-1m_item5core.txt", 6040, 999611, 3416),  # ICLRec's statistics
    ("ml-1m", "ml-1m.txt", 6040, 1000209, 3706),  # the full ML-1M, every item kept
])
def test_shared_benchmark_files_have_published_stats(name, filename, users, interactions, items, monkeypatch):
    monkeypatch.delenv(prep.SOURCE_ENV, raising=False)
    known = prep.KNOWN_DATASETS[name]
    folder = prep.SHARED_DATASETS / name
    src = folder / filename
    if not src.is_file():
        pytest.skip(f"{src} is absent: ../shared is not beside the project, or holds another version")
    present = [folder / f for f in known.candidates() if (folder / f).is_file()]
    assert locate_source(name, None, prep.SHARED_DATASETS) == present[0]  # the preferred copy that is there
    if known.sha256 and filename == known.filename:
        assert prep.sha256_of(src) == known.sha256
    seqs, skipped = read_sequences(src)
    assert skipped == 0 and len(seqs) == users
    assert sum(len(s) for _, s in seqs) == interactions
    assert len({i for _, s in seqs for i in s}) == items
