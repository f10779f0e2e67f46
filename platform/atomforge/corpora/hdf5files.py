"""Opening HDF5 corpora (ANI-1x, Transition1x) from local paths or fsspec URLs, with errors naming the file.

h5py reads a local path directly; for any other URL it is given an fsspec file object, so
only the chunks that are touched travel over the network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from atomforge.corpora import sources
from atomforge.corpora.base import CorpusError, RecordError


@contextlib.contextmanager
def open_hdf5(url: str, storage_options: dict | None = None) -> Iterator:
    """An open read-only `h5py.File`; a truncated or non-HDF5 file raises CorpusError naming it."""
    import h5py

    with contextlib.ExitStack() as stack:
        if sources.is_local(url):
            target = sources.local_copy(url)
        else:
            target = stack.enter_context(sources.open_file(url, "rb", storage_options))
        try:
            handle = h5py.File(target, "r")
        except (OSError, ValueError) as err:
            raise CorpusError(f"{url}: not a readable HDF5 file (truncated or corrupt?): {err}") from err
        with handle:
            yield handle


def read_dataset(group, name: str, url: str, record: str, shape: tuple[int | None, ...] | None = None,
                 rows: tuple[int, int] | None = None) -> np.ndarray:
    """`group[name]` as a numpy array (only rows [start, stop) of its first axis with `rows`);
    a missing, unreadable or misshapen dataset raises RecordError.

    The error names the file, the record (group) and the field; `shape` entries of None match any
    size and are checked against the whole dataset's shape (metadata, before any read), so a row
    range of a misshapen dataset fails exactly as the whole read does.
    """
    if name not in group:
        raise RecordError("missing_field", f"record {record}: field '{name}' missing (has {sorted(group.keys())})")
    try:
        dataset = group[name]
        full = tuple(dataset.shape)
        if shape is not None:
            matches = len(full) == len(shape) and all(want is None or want == got for want, got in zip(shape, full))
            if not matches:
                raise RecordError("bad_shape", f"record {record}: field '{name}' has shape {full}, "
                                               f"expected {tuple('*' if s is None else s for s in shape)}")
        return dataset[()] if rows is None else dataset[rows[0]:rows[1]]
    except (OSError, KeyError, TypeError) as err:
        raise RecordError("unreadable_field", f"record {record}: field '{name}' unreadable (truncated file?): {err}") from err


def num_records(group, names: tuple[str, ...]) -> int | None:
    """Records in a group from the first of `names` whose dataset has a leading axis (no data read)."""
    for name in names:
        try:
            shape = group[name].shape if name in group else None
        except (OSError, KeyError, TypeError):
            shape = None
        if shape:
            return int(shape[0])
    return None


def group_names(handle, url: str, path: str = "/") -> list[str]:
    """Sorted member names of the group at `path`; a missing group raises CorpusError."""
    if path not in handle:
        raise CorpusError(f"{url}: group '{path}' missing (top level has {sorted(handle.keys())})")
    return sorted(handle[path].keys())
