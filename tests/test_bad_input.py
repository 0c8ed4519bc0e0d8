"""Bad input: fuzzed benchmark files and configurations, truncated atomic files, huge ids.

Cases that fuzzing found are kept as explicit ``@example``s.
"""
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import tiny_overrides
from s4rec_recbole.config import ConfigError, read_yaml
from s4rec_recbole.data import DataError, convert, prepare_dataset, read_sequences
from s4rec_recbole.data.prepare import INTER_HEADER, MAX_ID, check_inter
from s4rec_recbole.runner import build_config, main

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ALPHABET = string.digits * 4 + "  \t\n\n\r-+_.ex" + "\u0663\u00b2\x00\x1c\u2028é"


@FUZZ
@given(text=st.text(alphabet=ALPHABET, max_size=120))
@example(text="1 2 3 \u0663\n")        # Arabic-Indic digit: int() accepts it, we do not
@example(text="1 2_0 3 4\n")           # underscore: int() reads 20, we do not
@example(text="1 +2 3 4\n")            # explicit sign
@example(text="1 2 3 4\x00\n")         # NUL byte
@example(text="1 2 3 4\r\n2 5 6 7\r\n")  # Windows line ends are fine
@example(text="1 2 3 4\x1c5\n")        # str.split() whitespace that is not a space
@example(text="99999999999999999999 1 2 3\n")
def test_converter_fuzz(tmp_path, text):
    src = tmp_path / "fuzz.txt"
    src.write_text(text, encoding="utf-8")
    try:
        sequences, skipped = read_sequences(src)
    except DataError as e:
        assert "\n" not in str(e) and str(src) in str(e)
        return
    users = [u for u, _ in sequences]
    assert len(set(users)) == len(users) and skipped >= 0
    for user, items in sequences:
        assert len(items) >= 3 and all(0 <= v <= MAX_ID for v in [user, *items])
    out = convert(src, "fuzz", tmp_path / "ds")
    check_inter(out)  # what we write passes our own check
    rows = out.read_text().splitlines()[1:]
    assert len(rows) == sum(len(items) for _, items in sequences)


@FUZZ
@given(data=st.binary(max_size=80))
@example(data=b"1 2 3 4\n\xff\xfe\n")
def test_converter_fuzz_bytes(tmp_path, data):
    src = tmp_path / "fuzz.bin"
    src.write_bytes(data)
    try:
        read_sequences(src)
    except DataError as e:
        assert "\n" not in str(e)


@pytest.mark.parametrize("content, message", [
    ("1 2 3 \u0663\n", r"token '\u0663' is not an integer id"),
    ("1 2_0 3 4\n", "token '2_0' is not an integer id"),
    ("1 2 3 4\x00\n", ":1: NUL byte"),
    (f"1 2 3 {2 ** 63}\n", f":1: id {2 ** 63} is larger than {2 ** 63 - 1}"),
])
def test_found_cases_messages(tmp_path, content, message):
    src = tmp_path / "b.txt"
    src.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_sequences(src)


def test_not_utf8(tmp_path):
    src = tmp_path / "b.txt"
    src.write_bytes(b"1 2 3 4\n\xff 1 2 3\n")
    with pytest.raises(DataError, match=r"b\.txt:2: not UTF-8 text"):
        read_sequences(src)


def test_huge_ids_that_fit_round_trip_through_recbole(tmp_path):
    big = 2 ** 62
    lines = [f"{big + u} " + " ".join(str(big + 100 * u + i) for i in range(5)) for u in range(1, 25)]
    src = tmp_path / "big.txt"
    src.write_text("\n".join(lines) + "\n")
    convert(src, "big", tmp_path)
    from recbole.data import create_dataset

    cfg = build_config("SASRec", "big", overrides=tiny_overrides(tmp_path))
    ds = create_dataset(cfg)
    assert ds.user_num == 25 and str(big + 1) in ds.field2token_id["user_id"]
    assert str(big + 100 + 4) in ds.field2token_id["item_id"]


@pytest.mark.parametrize("mangle, message", [
    (lambda t: t[: len(t) - 5], "malformed or truncated"),            # cut in the middle of the last line
    (lambda t: t.replace("\n1\t", "\n1 ", 1), "malformed or truncated"),  # wrong separator
    (lambda t: "user item time\n" + t.split("\n", 1)[1], ":1: expected the header"),
    (lambda t: "", ":1: expected the header .* got an empty file"),
    (lambda t: INTER_HEADER, "no interactions after the header"),
    (lambda t: t.replace("\n1\t", "\nx\t", 1), "malformed or truncated"),
])
def test_malformed_or_truncated_inter(tmp_path, tiny_source, mangle, message, capsys):
    out = convert(tiny_source, "tiny", tmp_path)
    out.write_text(mangle(out.read_text()))
    with pytest.raises(DataError, match=message) as e:
        prepare_dataset("tiny", tmp_path)
    assert str(out) in str(e.value) and "\n" not in str(e.value)
    assert main(["--dataset=tiny", f"--data_path={tmp_path}", "--model=SASRec", "--epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(out) in err


# -- configuration ------------------------------------------------------------------------------------
KEYS = ["epochs", "learning_rate", "train_batch_size", "n_clusters", "alpha", "tau1", "mask_history",
        "head_ratio", "MAX_ITEM_LIST_LENGTH", "eval_args", "topk", "metrics", "valid_metric", "seed",
        "stopping_step", "aug_operators", "length_bucket_pool", "n_clusterz", "learner", "eval_step"]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 10 ** 6), st.floats(allow_nan=True),
                   st.text(max_size=8), st.lists(st.integers(-2, 50), max_size=3),
                   st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3))
@example(overrides={"topk": "x"})
@example(overrides={"eval_args": 0})
@example(overrides={"metrics": {"": 0}})
@example(overrides={"topk": []})
@example(overrides={"learning_rate": float("nan")})
def test_config_fuzz_only_config_errors(tiny_data_path, overrides):
    try:
        build_config("S4Rec", "tiny", overrides=dict(tiny_overrides(tiny_data_path), **overrides))
    except ConfigError as e:
        assert "\n" not in str(e)


@pytest.mark.parametrize("key, value, message", [
    ("epochs", -1, r"epochs=-1: expected a number in \[0, inf\)"),
    ("learning_rate", 0.0, r"learning_rate=0.0: expected a number in \(0, inf\)"),
    ("learning_rate", float("nan"), r"learning_rate=nan: expected a number in \(0, inf\)"),
    ("train_batch_size", 0, r"train_batch_size=0: expected a number in \[1, inf\)"),
    ("MAX_ITEM_LIST_LENGTH", 1, r"MAX_ITEM_LIST_LENGTH=1: expected a number in \[2, inf\)"),
    ("head_ratio", 1.5, r"head_ratio=1.5: expected a number in \(0, 1\)"),
    ("length_bucket_pool", -2, r"length_bucket_pool=-2: expected a number in \[0, inf\)"),
    ("topk", [5, 0], r"RecBole rejected the configuration \(ValueError: topk must be a positive integer.*topk=\[5, 0\]"),
])
def test_training_values_out_of_range(tiny_data_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        build_config("SASRec", "tiny", overrides=tiny_overrides(tiny_data_path, **{key: value}))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=string.printable, max_size=60))
@example(text="alpha: [1\n")
@example(text="?")                      # found: YAML reads {None: None}; the key check crashed in difflib
@example(text="1: x\n")
@example(text="- a\n- b\n")
@example(text="alpha: !!python/object/apply:os.system ['true']\n")
def test_yaml_fuzz_only_config_errors(tiny_data_path, tmp_path, text):
    f = tmp_path / "fuzz.yaml"
    f.write_text(text)
    try:
        build_config("S4Rec", "tiny", [f], tiny_overrides(tiny_data_path))
    except ConfigError as e:
        assert "\n" not in str(e) and ("fuzz.yaml" in str(e) or "RecBole rejected" in str(e))


def test_yaml_python_tags_are_refused_not_run(tmp_path):
    """A config file cannot run code: python/* tags are a YAML error, and the command never runs."""
    witness = tmp_path / "ran"
    f = tmp_path / "evil.yaml"
    f.write_text(f"alpha: !!python/object/apply:os.system ['touch {witness}']\n")
    with pytest.raises(ConfigError, match=r"evil.yaml: not valid YAML \(could not determine a constructor"):
        read_yaml(f)
    assert not witness.exists()
