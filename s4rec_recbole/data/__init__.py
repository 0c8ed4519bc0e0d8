"""Benchmark preparation: one-line-per-user files -> RecBole atomic files."""
from s4rec_recbole.data.prepare import (  # noqa: F401
    KNOWN_DATASETS, DataError, atomic_write_text, convert, locate_source, prepare_dataset, read_sequences,
)
