"""Transition1x reader: `/{train,val,test,data}/{formula}/{rxn}/` HDF5 groups of NEB reaction paths.

Per reaction: atomic_numbers (Na,), positions (Nc, Na, 3) Å, `wB97x_6-31G(d).energy` (Nc,) eV,
`wB97x_6-31G(d).forces` (Nc, Na, 3) eV/Å (already platform units: nothing converted), and
subgroups `reactant`, `product`, `transition_state` with the same keys.
The official reaction-level split is preserved in `Structure.info["split"]`; `data` repeats the
train/val/test reactions, so reading it together with them is refused (it would double-count).
A reaction (or endpoint) group with a missing, unreadable or misshapen dataset makes each of its
frames a BadRecord naming the field; with `include_endpoints`, a reaction without one of the
endpoint groups gives a `missing_endpoint` BadRecord for it (never skipped silently).

system_id = `transition1x/<formula>/<rxn>/<frame>` (endpoints: `.../<rxn>/<role>/<frame>`),
group_id = `transition1x/<formula>/<rxn>` (split by reaction).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from atomforge.corpora import sources
from atomforge.corpora.ani1x import HDF5_SUFFIXES
from atomforge.corpora.base import (
    BadRecord,
    CorpusError,
    RecordError,
    StreamingCorpus,
    WorkUnit,
    bad_records,
    build_record,
)
from atomforge.corpora.hdf5files import group_names, num_records, open_hdf5, read_dataset
from atomforge.schema import Structure

OFFICIAL_SPLITS = ("train", "val", "test")
ENDPOINTS = {"reactant": "equilibrium", "product": "equilibrium", "transition_state": "neb"}  # role -> frame_kind


class Transition1xReader(StreamingCorpus):
    """Transition1x frames from HDF5 files under `url` (local or fsspec).

    Options:
        splits: which top-level groups to read (default train, val, test; or ("data",) alone).
        include_endpoints: also yield reactant / product / transition_state frames, tagged in
            `info["role"]` (default False: they repeat path end points).
        level: level-of-theory prefix (default "wB97x_6-31G(d)").
        reactions_per_unit: reactions per work unit (default 256).
        storage_options: fsspec options; kept on the reader, never in work units.
    """

    name = "transition1x"
    energy_convention = "total"

    def __init__(self, url: str, splits: tuple[str, ...] = OFFICIAL_SPLITS, include_endpoints: bool = False,
                 level: str = "wB97x_6-31G(d)", reactions_per_unit: int = 256,
                 storage_options: dict | None = None) -> None:
        splits = tuple(splits)
        unknown = set(splits) - set(OFFICIAL_SPLITS + ("data",))
        if unknown or not splits:
            raise ValueError(f"option 'splits' is {splits!r}; expected a subset of {OFFICIAL_SPLITS} or ('data',)")
        if "data" in splits and len(splits) > 1:
            raise ValueError(f"option 'splits' is {splits!r}: 'data' repeats train/val/test and would double-count")
        if reactions_per_unit < 1:
            raise ValueError(f"option 'reactions_per_unit' must be >= 1, got {reactions_per_unit}")
        self.url = url
        self.splits = splits
        self.include_endpoints = include_endpoints
        self.level = level
        self.reactions_per_unit = reactions_per_unit
        self.storage_options = storage_options

    def work_units(self) -> list[WorkUnit]:
        """Per file and split, ranges of `reactions_per_unit` reactions (lists group names only).

        A file that cannot be opened gives one unit per split: reading it records it as unreadable.
        """
        units = []
        step = self.reactions_per_unit
        for path in self.source_paths():
            stack = contextlib.ExitStack()
            try:
                handle = stack.enter_context(open_hdf5(path, self.storage_options))
            except CorpusError:
                units += [WorkUnit(self.name, path, 0, None, {"root": self.url, "split": s}) for s in self.splits]
                continue
            with stack:  # a readable file without a requested split raises: a user error, not bad data
                counts = {split: len(reactions(handle, path, split)) for split in self.splits}
            for split, num in counts.items():
                units += [WorkUnit(self.name, path, start, min(start + step, num), {"root": self.url, "split": split})
                          for start in range(0, num, step)]
        return units

    def source_paths(self) -> list[str]:
        return sources.list_files(self.url, HDF5_SUFFIXES, self.storage_options)

    def read(self, unit: WorkUnit) -> Iterator[Structure | BadRecord]:
        """Frames of the unit's reactions (path frames, then endpoints when asked for)."""
        split = unit.options["split"]
        with open_hdf5(unit.path, self.storage_options) as handle:
            for formula, rxn in reactions(handle, unit.path, split)[unit.start:unit.stop]:
                group = handle[f"{split}/{formula}/{rxn}"]
                reaction = f"{formula}/{rxn}"
                yield from self._frames(group, unit.path, reaction, split, None)
                if self.include_endpoints:
                    for role in ENDPOINTS:
                        if role in group:
                            yield from self._frames(group[role], unit.path, reaction, split, role)
                        else:
                            source = f"{unit.path}[{group.name}/{role}]"
                            yield BadRecord(f"transition1x/{reaction}/{role}/0", source, "missing_endpoint",
                                            f"{source}: reaction {reaction} has no '{role}' group")

    def _frames(self, group, url: str, reaction: str, split: str, role: str | None):
        record = f"{group.name}"
        prefix = f"transition1x/{reaction}" + (f"/{role}" if role else "")
        try:
            numbers, positions, energy, forces = self._arrays(group, url, record)
        except RecordError as error:
            count = num_records(group, ("positions", f"{self.level}.energy", f"{self.level}.forces"))
            if count is None:
                yield BadRecord(f"{prefix}/*", f"{url}[{record}]", error.reason,
                                f"{url}[{record}]: {error.detail}; frame count unknown", uncounted=True)
                return
            yield from bad_records([f"{prefix}/{i}" for i in range(count)],
                                   [f"{url}[{record}/{i}]" for i in range(count)], error)
            return
        for index in range(positions.shape[0]):
            yield build_record(
                f"{url}[{record}/{index}]", f"{prefix}/{index}",
                atomic_numbers=numbers, positions=positions[index], energy=energy[index], forces=forces[index],
                dataset="transition1x", group_id=f"transition1x/{reaction}",
                frame_kind=ENDPOINTS[role] if role else "neb",
                info={"split": split, "role": role or "path"},
            )

    def _arrays(self, group, url: str, record: str) -> tuple:
        numbers = read_dataset(group, "atomic_numbers", url, record, (None,))
        num_atoms = numbers.shape[0]
        positions = read_dataset(group, "positions", url, record, (None, num_atoms, 3))
        num_frames = positions.shape[0]
        energy = read_dataset(group, f"{self.level}.energy", url, record, (num_frames,))
        forces = read_dataset(group, f"{self.level}.forces", url, record, (num_frames, num_atoms, 3))
        return numbers, positions, energy, forces


def reactions(handle, url: str, split: str) -> list[tuple[str, str]]:
    """Sorted (formula, rxn) pairs under `/<split>`."""
    return [(formula, rxn) for formula in group_names(handle, url, split)
            for rxn in group_names(handle, url, f"{split}/{formula}")]
