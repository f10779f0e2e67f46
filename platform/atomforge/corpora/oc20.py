"""OC20 S2EF reader: `N.extxyz` + `N.txt` pairs (plain or .xz), fairchem `.aselmdb`, and (opt-in) pickled LMDB.

extxyz frame i carries the DFT total `energy` (eV; `free_energy` ignored), forces (eV/Å),
`move_mask` (False = fixed, read by ASE as FixAtoms) and tags (0 sub-surface, 1 surface,
2 adsorbate). Line i of the paired txt is `random<sid>,frame<fid>,<reference_energy>`.
The Structure's `energy` is the S2EF target `energy - reference_energy` and `total_energy`
keeps the raw total. No unit conversion (OC20 is in eV, Å, eV/Å).

system_id = `oc20/random<sid>/frame<fid>`, group_id = `oc20/random<sid>` (one adsorbate+slab system).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from atomforge.corpora import sources
from atomforge.corpora.asefiles import _stream_frames, record_from_atoms
from atomforge.corpora.base import BadRecord, CorpusError, WorkUnit
from atomforge.corpora.lmdbfiles import LMDB_SUFFIXES, OpenCatalystReader, read_lmdb_unit
from atomforge.schema import Structure

EXTXYZ_SUFFIXES = (".extxyz",)


class OC20Reader(OpenCatalystReader):
    """OC20 S2EF frames under `url` (a pair's extxyz, a folder of pairs, LMDBs; local or fsspec).

    Options as `OpenCatalystReader`; `frame_kind="md"` for the MD / rattled extras.
    """

    name = "oc20"
    energy_convention = "referenced"

    def work_units(self) -> list[WorkUnit]:
        """One unit per extxyz/txt pair; LMDBs split into record ranges."""
        return self.file_units(EXTXYZ_SUFFIXES, {"root": self.url, "frame_kind": self.frame_kind})

    def read(self, unit: WorkUnit) -> Iterator[Structure | BadRecord]:
        """Frames of one extxyz/txt pair (or LMDB record range), in file order."""
        if sources.base_suffix(unit.path) in LMDB_SUFFIXES:
            yield from read_lmdb_unit(self, unit)
            return
        txt_url = paired_txt(unit.path)
        frame_kind = unit.options.get("frame_kind", self.frame_kind)
        with sources.open_file(txt_url, "rt", self.storage_options) as txt:
            frames = _stream_frames(unit.path, "extxyz", self.storage_options)
            for (index, atoms), line in _zip_strict(frames, txt, unit.path, txt_url):
                sid, fid, reference = parse_txt_line(line, txt_url, index)
                yield _frame_record(atoms, f"{unit.path}[frame {index}]", sid, fid, reference, frame_kind)


def paired_txt(extxyz_url: str) -> str:
    """`.../N.extxyz[.xz]` -> `.../N.txt[.xz]` (same compression)."""
    head, _, compression = extxyz_url.partition(".extxyz")
    return f"{head}.txt{compression}"


def _zip_strict(frames, txt, extxyz_url: str, txt_url: str) -> Iterator[tuple[tuple[int, Any], str]]:
    """Pairs (frame, txt line); a length mismatch is a CorpusError naming both files."""
    num_frames = 0
    for frame in frames:
        line = txt.readline()
        if not line.strip():
            raise CorpusError(f"{txt_url}: has {num_frames} lines but {extxyz_url} has more frames "
                              f"(no line for frame {num_frames})")
        num_frames += 1
        yield frame, line
    extra = sum(1 for line in txt if line.strip())
    if extra:
        raise CorpusError(f"{txt_url}: has {num_frames + extra} lines but {extxyz_url} has {num_frames} frames")


def parse_txt_line(line: str, txt_url: str, index: int) -> tuple[str, str, float]:
    """`random<sid>,frame<fid>,<reference eV>` -> ("random<sid>", "frame<fid>", reference)."""
    parts = line.strip().split(",")
    if len(parts) != 3 or not parts[0].startswith("random") or not parts[1].startswith("frame"):
        raise CorpusError(f"{txt_url}: line {index + 1}: expected 'random<sid>,frame<fid>,<energy>', got {line!r}")
    try:
        reference = float(parts[2])
    except ValueError as err:
        raise CorpusError(f"{txt_url}: line {index + 1}: reference energy {parts[2]!r} is not a number") from err
    return parts[0], parts[1], reference


def _frame_record(atoms, source: str, sid: str, fid: str, reference: float, frame_kind: str):
    results = atoms.calc.results if atoms.calc is not None else {}
    system_id = f"oc20/{sid}/{fid}"
    if "energy" not in results:
        return BadRecord(system_id, source, "missing_label", f"{source}: {system_id}: field 'energy' missing")
    total = float(results["energy"])
    return record_from_atoms(atoms, source, system_id, energy=total - reference, total_energy=total,
                             dataset="oc20", group_id=f"oc20/{sid}", frame_kind=frame_kind)
