"""Corpus readers: raw files as released (local paths or fsspec URLs) -> streams of `Structure`s.

    reader = read_corpus("ani1x", "s3://bucket/ani1x-release.h5", level="wb97x_dz")
    for unit in reader.work_units():      # cheap listing; ship units to workers
        for record in reader.read(unit):  # Structure or BadRecord
            ...
    for structure in reader:              # or stream everything, BadRecords counted in reader.counts
        ...

Each reader module documents its options, ids and unit conversions.
"""

from __future__ import annotations

from collections.abc import Iterator

from atomforge.corpora.base import BadRecord, CorpusError, CorpusReader, StreamingCorpus, WorkUnit
from atomforge.datasets import dataset_spec
from atomforge.schema import Structure

__all__ = ["BadRecord", "CorpusError", "CorpusReader", "StreamingCorpus", "WorkUnit",
           "read_corpus", "read_unit"]


def read_corpus(name: str, url: str, **options) -> StreamingCorpus:
    """A reader for corpus `name` over `url` (file, folder or glob; local path or fsspec URL).

    The reader implements the `CorpusReader` protocol (`work_units()`, `read(unit)`) and
    iterates all valid Structures, counting skipped records by reason in `reader.counts`.
    Raises ValueError for an unknown corpus name or option.
    """
    reader_class = dataset_spec(name).reader()  # the corpus's reader (atomforge.datasets)
    try:
        return reader_class(url, **options)
    except TypeError as err:  # an unknown keyword: say which corpus rejected it
        raise ValueError(f"corpus {name!r}: bad option ({err})") from err


def read_unit(unit: WorkUnit, **options) -> Iterator[Structure | BadRecord]:
    """Records of one work unit on a worker that only has the unit (plus e.g. storage_options)."""
    reader = read_corpus(unit.corpus, unit.options.get("root", unit.path), **options)
    return reader.read(unit)
