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

import importlib
from collections.abc import Iterator

from atomforge.corpora.base import BadRecord, CorpusError, CorpusReader, StreamingCorpus, WorkUnit
from atomforge.schema import Structure

# corpus name -> "module:ReaderClass" (imported on first use so `import atomforge.corpora` stays cheap)
READERS = {
    "ase": "atomforge.corpora.asefiles:AseFilesReader",
    "oc20": "atomforge.corpora.oc20:OC20Reader",
    "oc22": "atomforge.corpora.oc22:OC22Reader",
    "ani1x": "atomforge.corpora.ani1x:ANI1xReader",
    "transition1x": "atomforge.corpora.transition1x:Transition1xReader",
    "rmd17": "atomforge.corpora.rmd17:RMD17Reader",
}

__all__ = ["READERS", "BadRecord", "CorpusError", "CorpusReader", "StreamingCorpus", "WorkUnit",
           "read_corpus", "read_unit"]


def read_corpus(name: str, url: str, **options) -> StreamingCorpus:
    """A reader for corpus `name` over `url` (file, folder or glob; local path or fsspec URL).

    The reader implements the `CorpusReader` protocol (`work_units()`, `read(unit)`) and
    iterates all valid Structures, counting skipped records by reason in `reader.counts`.
    Raises ValueError for an unknown corpus name or option.
    """
    if name not in READERS:
        raise ValueError(f"unknown corpus {name!r}; expected one of {sorted(READERS)}")
    module_name, class_name = READERS[name].split(":")
    reader_class = getattr(importlib.import_module(module_name), class_name)
    try:
        return reader_class(url, **options)
    except TypeError as err:  # an unknown keyword: say which corpus rejected it
        raise ValueError(f"corpus {name!r}: bad option ({err})") from err


def read_unit(unit: WorkUnit, **options) -> Iterator[Structure | BadRecord]:
    """Records of one work unit on a worker that only has the unit (plus e.g. storage_options)."""
    reader = read_corpus(unit.corpus, unit.options.get("root", unit.path), **options)
    return reader.read(unit)
