"""OC22 S2EF-Total reader: total DFT energies of oxide surfaces from ASE trajectories / extxyz,
fairchem `.aselmdb`, or (opt-in, pickled) fairchem v1 LMDBs.

Energies are totals (eV), forces eV/Å; FixAtoms -> `fixed`, tags kept. No conversion.
system_id = `oc22/<file path relative to the root, no suffix>/<frame>` for trajectories (group =
the file: one relaxation) and `oc22/random<sid>/frame<fid>` for pickled LMDB records (group = sid).
"""

from __future__ import annotations

from collections.abc import Iterator

from atomforge.corpora import sources
from atomforge.corpora.asefiles import STREAM_FORMATS, AseFilesReader
from atomforge.corpora.base import BadRecord, WorkUnit
from atomforge.corpora.lmdbfiles import LMDB_SUFFIXES, OpenCatalystReader, read_lmdb_unit
from atomforge.schema import Structure

TRAJECTORY_SUFFIXES = (".traj", ".extxyz")


class OC22Reader(OpenCatalystReader):
    """OC22 frames under `url` (file, folder or glob; local or fsspec). Options as `OpenCatalystReader`."""

    name = "oc22"
    energy_convention = "total"

    def __init__(self, url: str, frame_kind: str = "relax", trust_pickle: bool = False,
                 records_per_unit: int = 10_000, storage_options: dict | None = None) -> None:
        super().__init__(url, frame_kind, trust_pickle, records_per_unit, storage_options)
        self._trajectories = AseFilesReader(url, dataset="oc22", frame_kind=frame_kind, group_by="file",
                                            storage_options=storage_options)

    def work_units(self) -> list[WorkUnit]:
        """One unit per trajectory file; LMDBs split into record ranges."""
        options = {"root": self.url, "dataset": "oc22", "frame_kind": self.frame_kind, "group_by": "file"}
        return self.file_units(TRAJECTORY_SUFFIXES, options)

    def source_paths(self) -> list[str]:
        return sources.list_files(self.url, TRAJECTORY_SUFFIXES + LMDB_SUFFIXES, self.storage_options)

    def read(self, unit: WorkUnit) -> Iterator[Structure | BadRecord]:
        """Frames of one trajectory file or LMDB record range."""
        suffix = sources.base_suffix(unit.path)
        if suffix in LMDB_SUFFIXES:
            yield from read_lmdb_unit(self, unit)
        else:
            assert suffix in STREAM_FORMATS
            yield from self._trajectories.read(unit)
