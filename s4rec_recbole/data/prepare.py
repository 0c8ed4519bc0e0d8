"""Turn one-line-per-user benchmark files into RecBole atomic files.

Input format (S3-Rec / CoSeRec / ICLRec): one line per user, ``user item item ...``, space separated,
items in time order (oldest first). Output: ``<data_path>/<name>/<name>.inter`` with the header
``user_id:token  item_id:token  timestamp:float`` (tab separated), where the timestamp is the item's
position in the user's line, so RecBole's ``order: TO`` leave-one-out split reproduces the benchmark's
(last item = test, second-to-last = validation).
"""
import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

logger = logging.getLogger(__name__)

# Users need at least 3 items for a leave-one-out split (one to train on, one to validate, one to test).
MIN_ITEMS = 3
INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"
_ID = re.compile(r"[0-9]+")
MAX_ID = 2 ** 63 - 1
SOURCE_ENV = "S4REC_DATA_SOURCE"
_ICLREC_DATA = "https://raw.githubusercontent.com/salesforce/ICLRec/master/data/"


class DataError(ValueError):
    """Bad benchmark input; the message names the file, the line and what was expected."""


@dataclass(frozen=True)
class BenchmarkSource:
    """Where a known benchmark comes from. ``sha256`` is None where no checksum is published. ``local_filename``,
    where set, is the name of a local copy to take before ``filename`` (in the shared folder or a --data_source
    folder): one rebuilt to match the downloaded file where the shared ``filename`` is another version."""

    filename: str
    url: str
    sha256: Optional[str]
    local_filename: Optional[str] = None

    def candidates(self):
        """File names to look for in a folder, preferred first."""
        return tuple(n for n in (self.local_filename, self.filename) if n)


KNOWN_DATASETS = {
    "amazon-beauty": BenchmarkSource(
        "Beauty.txt", _ICLREC_DATA + "Beauty.txt",
        "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"),
    "amazon-sports-outdoors": BenchmarkSource(
        "Sports_and_Outdoors.txt", _ICLREC_DATA + "Sports_and_Outdoors.txt",
        "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2"),
    "amazon-toys-games": BenchmarkSource("Toys_and_Games.txt", _ICLREC_DATA + "Toys_and_Games.txt", None),
    "yelp": BenchmarkSource("Yelp.txt", _ICLREC_DATA + "Yelp.txt", None),
    # ICLRec's ml-1m.txt has 3,416 items (items with < 5 ratings dropped); the shared ml-1m.txt keeps all 3,706 and
    # ml-1m_item5core.txt beside it matches ICLRec's statistics (../shared/datasets/ml-1m/SOURCE.md)
    "ml-1m": BenchmarkSource("ml-1m.txt", _ICLREC_DATA + "ml-1m.txt", None, local_filename="ml-1m_item5core.txt"),
}

SHARED_DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def read_sequences(path, strict: bool = False) -> Tuple[List[Tuple[int, List[int]]], int]:
    """Parse a one-line-per-user file.

    Returns ``(sequences, skipped)``: ``sequences`` is a list of ``(user_id, [item, ...])`` in file
    order and ``skipped`` the number of users with fewer than ``MIN_ITEMS`` items, which are dropped
    (or, with ``strict``, rejected with a :class:`DataError`).
    """
    path = Path(path)
    sequences, seen, skipped = [], {}, 0
    for lineno, line in _lines(path):
        tokens = line.split()
        where = f"{path}:{lineno}"
        if not tokens:
            raise DataError(f"{where}: empty line; expected 'user item item ...'")
        bad = next((t for t in tokens if not _ID.fullmatch(t)), None)
        if bad is not None:
            what = f"negative id {bad!r}" if _ID.fullmatch(bad[1:]) and bad[0] == "-" else \
                f"token {bad!r} is not an integer id"
            raise DataError(f"{where}: {what}; expected 'user item item ...' of non-negative integer ids "
                            "(ASCII digits)")
        values = [int(t) for t in tokens]
        if max(values) > MAX_ID:
            raise DataError(f"{where}: id {max(values)} is larger than {MAX_ID}; expected ids that fit in 64 bits")
        user, items = values[0], values[1:]
        if user in seen:
            raise DataError(f"{where}: user {user} already appeared on line {seen[user]}; expected one line per user")
        seen[user] = lineno
        if len(items) < MIN_ITEMS:
            if strict:
                raise DataError(
                    f"{where}: user {user} has {len(items)} items; expected at least {MIN_ITEMS} for a leave-one-out split")
            skipped += 1
            continue
        sequences.append((user, items))
    if not sequences:
        raise DataError(f"{path}: no user with at least {MIN_ITEMS} items")
    return sequences, skipped


def _lines(path):
    """``(line number, text)`` of a UTF-8 text file; undecodable bytes are a :class:`DataError`."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path}:{lineno}: not UTF-8 text; expected a plain text file") from None
            if "\x00" in text:
                raise DataError(f"{path}:{lineno}: NUL byte; expected a plain text file")
            yield lineno, text


def check_inter(path) -> None:
    """Check an existing atomic ``.inter`` file (one this project wrote, possibly since truncated or
    edited): the header, then ``user<TAB>item<TAB>position`` on every line. One-line :class:`DataError`."""
    path = Path(path)
    lines = _lines(path)
    first = next(lines, None)
    if first is None or first[1].rstrip("\r\n") != INTER_HEADER.rstrip("\n"):
        got = "an empty file" if first is None else repr(first[1].rstrip("\r\n")[:80])
        raise DataError(f"{path}:1: expected the header {INTER_HEADER.rstrip()!r}, got {got}; "
                        "delete the file to convert the benchmark again")
    n = 0
    for lineno, text in lines:
        fields = text.rstrip("\r\n").split("\t")
        if len(fields) != 3 or not all(_ID.fullmatch(f) for f in fields) or not text.endswith("\n"):
            raise DataError(f"{path}:{lineno}: expected 'user<TAB>item<TAB>position' (three integers and a newline), "
                            f"got {text.rstrip()[:80]!r}; the file is malformed or truncated, delete it to convert again")
        n += 1
    if n == 0:
        raise DataError(f"{path}: no interactions after the header; delete the file to convert again")


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def convert(source, name: str, data_path, strict: bool = False) -> Path:
    """Convert ``source`` into ``<data_path>/<name>/<name>.inter`` (atomically) and return its path."""
    sequences, skipped = read_sequences(source, strict=strict)
    if skipped:
        logger.warning("%s: skipped %d users with fewer than %d items", source, skipped, MIN_ITEMS)
    lines = [INTER_HEADER]
    for user, items in sequences:
        lines.extend(f"{user}\t{item}\t{pos}\n" for pos, item in enumerate(items))
    out = Path(data_path) / name / f"{name}.inter"
    atomic_write_text(out, "".join(lines))
    n_inter = sum(len(items) for _, items in sequences)
    logger.info("prepared %s: %d users, %d interactions -> %s", name, len(sequences), n_inter, out)
    return out


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def locate_source(name: str, data_source=None, shared_dir=SHARED_DATASETS) -> Optional[Path]:
    """Find the raw benchmark file: ``data_source``, then env ``S4REC_DATA_SOURCE``, then the shared copy.

    ``data_source`` (and the env variable) may name the file itself or a folder holding the known file
    name. Returns None when nothing is found; raises :class:`DataError` when an explicit source is missing.
    """
    known = KNOWN_DATASETS.get(name)
    for origin, given in (("--data_source", data_source), (SOURCE_ENV, os.environ.get(SOURCE_ENV))):
        if not given:
            continue
        p = Path(given).expanduser()
        if p.is_dir():
            if known is None:
                raise DataError(f"{origin}={given}: is a folder; expected the dataset file itself for unknown dataset {name!r}")
            p = next((p / n for n in known.candidates() if (p / n).is_file()), p / known.filename)
        if not p.is_file():
            raise DataError(f"{origin}={given}: no such file; expected a one-line-per-user benchmark file")
        return p
    if known is not None and shared_dir is not None:
        for filename in known.candidates():
            p = Path(shared_dir) / name / filename
            if p.is_file():
                return p
    return None


def download(name: str, dest_dir, show_progress: bool = True) -> Path:
    """Download a known benchmark into ``dest_dir`` with a progress bar and a sha256 check."""
    known = KNOWN_DATASETS[name]
    dest = Path(dest_dir) / known.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + known.filename + ".", suffix=".part", dir=dest.parent)
    try:
        from tqdm import tqdm

        with urllib.request.urlopen(known.url, timeout=30) as resp, os.fdopen(fd, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=known.filename, disable=not show_progress) as bar:
                for block in iter(lambda: resp.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        digest = sha256_of(tmp)
        if known.sha256 is None:
            logger.warning("%s: no published sha256 to check against; downloaded file has sha256 %s", name, digest)
        elif digest != known.sha256:
            raise DataError(f"{known.url}: sha256 {digest} does not match the expected {known.sha256}")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:
        raise DataError(
            f"cannot download {name} from {known.url} ({e}); give the file with --data_source=PATH "
            f"or {SOURCE_ENV}=PATH (a one-line-per-user {known.filename})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def prepare_dataset(name: str, data_path, data_source=None, strict: bool = False,
                    shared_dir=SHARED_DATASETS) -> Path:
    """Return ``<data_path>/<name>/<name>.inter``, making it first if it does not exist."""
    inter = Path(data_path) / name / f"{name}.inter"
    if inter.is_file() and data_source is None:
        check_inter(inter)
        return inter
    source = locate_source(name, data_source, shared_dir)
    if source is None:
        if name not in KNOWN_DATASETS:
            raise DataError(
                f"unknown dataset {name!r}: no {inter}; expected one of {sorted(KNOWN_DATASETS)}, "
                f"or give a one-line-per-user file with --data_source=PATH")
        source = download(name, Path(data_path) / name / "raw")
    return convert(source, name, data_path, strict=strict)
