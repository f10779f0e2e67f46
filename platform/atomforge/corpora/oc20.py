"""OC20 S2EF reader: `N.extxyz` + `N.txt` pairs (plain or .xz), fairchem `.aselmdb`, and (opt-in) pickled LMDB.

extxyz frame i carries the DFT total `energy` (eV; `free_energy` ignored), forces (eV/Å),
`move_mask` (False = fixed, read by ASE as FixAtoms) and tags (0 sub-surface, 1 surface,
2 adsorbate). Line i of the paired txt is `random<sid>,frame<fid>,<reference_energy>`.
The Structure's `energy` is the S2EF target `energy - reference_energy` and `total_energy`
keeps the raw total. No unit conversion (OC20 is in eV, Å, eV/Å).

system_id = `oc20/random<sid>/frame<fid>`, group_id = `oc20/random<sid>` (one adsorbate+slab system).

Pairing is verified before any frame is yielded: the frames are counted from their count lines
(`corpora.extxyz.split_frames`, no parsing) and every txt line must be well formed, one per frame.
Where a frame carries its own `sid` / `fid` (comment-line keys) they must match its txt line.
A pair that fails yields every frame as an `unpaired_frame` BadRecord (ids `oc20/<file>/<frame
index>`: the txt ids cannot be trusted), so mis-paired labels are never written. Within a good
pair, a malformed frame is one BadRecord and the next frame follows.
"""

from __future__ import annotations

import lzma
import os
import zlib
from collections.abc import Iterator

import numpy as np

from atomforge.corpora import extxyz_columns, frame_ranges, sources
from atomforge.corpora.asefiles import record_from_atoms
from atomforge.corpora.base import BadRecord, CorpusError, RecordError, WorkUnit
from atomforge.corpora.extxyz import FrameSpan, frame_atoms, split_frames
from atomforge.corpora.lmdbfiles import LMDB_SUFFIXES, OpenCatalystReader, oc_id, read_lmdb_unit
from atomforge.schema import Structure
from atomforge.structure_batch import StructureBatch

EXTXYZ_SUFFIXES = (".extxyz",)
TxtLine = tuple[str, str, float]  # ("random<sid>", "frame<fid>", reference energy eV)
CHUNK_FRAMES = 256  # frames parsed into one StructureBatch (bounded memory, enough to amortise calls)


class OC20Reader(OpenCatalystReader):
    """OC20 S2EF frames under `url` (a pair's extxyz, a folder of pairs, LMDBs; local or fsspec).

    Options as `OpenCatalystReader`, plus `unit_bytes` and `max_units`: local, uncompressed extxyz
    files are read as byte-range units of about `frame_ranges.unit_size(their total bytes,
    unit_bytes, max_units)` (4 MiB, more for a corpus above 16 GiB; `frame_ranges` says how).
    `frame_kind="md"` for the MD / rattled extras.
    """

    name = "oc20"
    energy_convention = "referenced"

    def __init__(self, url: str, frame_kind: str = "relax", trust_pickle: bool = False,
                 records_per_unit: int = 10_000, unit_bytes: int = frame_ranges.UNIT_BYTES,
                 max_units: int = frame_ranges.MAX_UNITS, storage_options: dict | None = None) -> None:
        super().__init__(url, frame_kind, trust_pickle, records_per_unit, storage_options)
        for option, value in (("unit_bytes", unit_bytes), ("max_units", max_units)):
            if value < 1:
                raise ValueError(f"option {option!r} must be >= 1, got {value}")
        self.unit_bytes, self.max_units = unit_bytes, max_units

    def work_units(self) -> list[WorkUnit]:
        """One unit per extxyz/txt pair, big local ones cut into byte ranges; LMDBs split into record ranges.

        The plan depends on file sizes and options only, never on how many workers run it.
        """
        units = self.file_units(EXTXYZ_SUFFIXES, {"root": self.url, "frame_kind": self.frame_kind})
        sizes = [self.splittable_size(unit) for unit in units]
        size = frame_ranges.unit_size(sum(s for s in sizes if s is not None), self.unit_bytes, self.max_units)
        return [part for unit, bytes_ in zip(units, sizes)
                for part in ([unit] if bytes_ is None else frame_ranges.split_file(unit, bytes_, size))]

    def source_paths(self) -> list[str]:
        """extxyz files with their paired txt files, and LMDBs."""
        paths = []
        for path in sources.list_files(self.url, EXTXYZ_SUFFIXES + LMDB_SUFFIXES, self.storage_options):
            paths.append(path)
            if sources.base_suffix(path) in EXTXYZ_SUFFIXES:
                paths.append(paired_txt(path))
        return paths

    def splittable_size(self, unit: WorkUnit) -> int | None:
        """Bytes of a local, uncompressed extxyz (it may be cut into byte ranges), else None."""
        if sources.base_suffix(unit.path) not in EXTXYZ_SUFFIXES or not sources.is_local(unit.path) \
                or sources.strip_compression(unit.path) != unit.path:
            return None
        return os.path.getsize(sources.url_to_fs(unit.path)[1])

    def read(self, unit: WorkUnit) -> Iterator[Structure | StructureBatch | BadRecord]:
        """Frames of one extxyz/txt pair (or its byte range, or an LMDB record range), in file order.

        Clean frames come as `StructureBatch`es parsed by oxyz (`extxyz_columns`); a file oxyz
        cannot index exactly as `split_frames` splits it is read frame by frame through ASE by the
        unit that starts at byte 0, and a chunk the fast path declines is read frame by frame.
        """
        if sources.base_suffix(unit.path) in LMDB_SUFFIXES:
            yield from read_lmdb_unit(self, unit)
            return
        try:
            with extxyz_columns.plain_local_copy(unit.path, self.storage_options) as path:
                index = extxyz_columns.checked_index(path)
                if index is not None:
                    yield from self._read_indexed(unit, path, index)
                    return
        except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error):
            pass  # a torn or unreadable file: the frame-by-frame path says where and why
        if frame_ranges.unit_range(unit) is None or frame_ranges.unit_range(unit)[0] == 0:
            yield from self._read_split(unit)

    def _read_indexed(self, unit: WorkUnit, path: str, index) -> Iterator[Structure | StructureBatch | BadRecord]:
        offsets, _ = index
        txt_url = paired_txt(unit.path)
        first, stop = frame_ranges.frames_in_range(offsets, frame_ranges.unit_range(unit))
        lines, problem = read_txt(txt_url, len(offsets), self.storage_options)
        if problem is not None:
            yield from _unpaired(unit, range(first, stop), txt_url, problem)
            return
        frame_kind = unit.options.get("frame_kind", self.frame_kind)
        for start in range(first, stop, CHUNK_FRAMES):
            end = min(start + CHUNK_FRAMES, stop)
            columns = extxyz_columns.read_columns(path, start, end, decline_keys=("sid", "fid"))
            if columns is None or not columns.has_energy.all():
                for k in range(start, end):
                    span = FrameSpan(k, int(offsets[k]), extxyz_columns.frame_bytes(path, offsets, k))
                    sid, fid, reference = lines[k]
                    yield _frame_record(span, f"{unit.path}[frame {k}]", sid, fid, reference, frame_kind, txt_url)
                continue
            ids = lines[start:end]
            total = columns.energy
            yield extxyz_columns.to_batch(
                columns, [f"oc20/{sid}/{fid}" for sid, fid, _ in ids], [f"oc20/{sid}" for sid, _, _ in ids],
                "oc20", frame_kind, [f"{unit.path}[frame {k}]" for k in range(start, end)],
                energy=total - np.array([reference for _, _, reference in ids]), total_energy=total)

    def _read_split(self, unit: WorkUnit) -> Iterator[Structure | BadRecord]:
        """The whole pair frame by frame (split at count lines, each frame parsed alone by ASE)."""
        txt_url = paired_txt(unit.path)
        num_frames = count_frames(unit.path, self.storage_options)
        lines, problem = read_txt(txt_url, num_frames, self.storage_options)
        if problem is not None:
            yield from _unpaired(unit, range(num_frames), txt_url, problem)
            return
        frame_kind = unit.options.get("frame_kind", self.frame_kind)
        with sources.open_file(unit.path, "rb", self.storage_options) as fobj:
            for span, (sid, fid, reference) in zip(split_frames(fobj), lines):
                source = f"{unit.path}[frame {span.index}]"
                yield _frame_record(span, source, sid, fid, reference, frame_kind, txt_url)


def _unpaired(unit: WorkUnit, frames: range, txt_url: str, problem: str) -> Iterator[BadRecord]:
    stem = sources.relative_stem(unit.path, unit.options.get("root", unit.path))
    for index in frames:
        source = f"{unit.path}[frame {index}]"
        yield BadRecord(f"oc20/{stem}/{index}", source, "unpaired_frame",
                        f"{source}: not written, pairing with {txt_url} failed: {problem}")


def paired_txt(extxyz_url: str) -> str:
    """`.../N.extxyz[.xz]` -> `.../N.txt[.xz]` (same compression)."""
    head, _, compression = extxyz_url.partition(".extxyz")
    return f"{head}.txt{compression}"


def count_frames(url: str, storage_options: dict | None) -> int:
    """Frames in an extxyz file, from its count lines (one scan, atom lines not parsed)."""
    try:
        with sources.open_file(url, "rb", storage_options) as fobj:
            return sum(1 for _ in split_frames(fobj, keep_data=False))
    except CorpusError:
        raise
    except Exception as err:  # noqa: BLE001 - lzma / gzip / I/O errors: the file is unreadable as a whole
        raise CorpusError(f"{url}: cannot be read to count its frames ({type(err).__name__}: {err})") from err


def read_txt(txt_url: str, num_frames: int, storage_options: dict | None) -> tuple[list[TxtLine], str | None]:
    """The parsed lines of a pair's txt file and, if the pair cannot be trusted, why (else None)."""
    try:
        with sources.open_file(txt_url, "rt", storage_options) as txt:
            raw = txt.read().splitlines()
    except (CorpusError, OSError, EOFError, UnicodeDecodeError) as err:
        return [], f"the txt file cannot be read ({err})"
    except Exception as err:  # noqa: BLE001 - lzma errors of a torn .txt.xz
        return [], f"the txt file cannot be read ({type(err).__name__}: {err})"
    while raw and not raw[-1].strip():
        raw.pop()
    if len(raw) != num_frames:
        return [], f"{len(raw)} txt lines for {num_frames} frames"
    try:
        return [parse_txt_line(line, txt_url, index) for index, line in enumerate(raw)], None
    except RecordError as err:
        return [], err.detail


def parse_txt_line(line: str, txt_url: str, index: int) -> TxtLine:
    """`random<sid>,frame<fid>,<reference eV>` -> ("random<sid>", "frame<fid>", reference); RecordError if not."""
    parts = line.strip().split(",")
    if len(parts) != 3 or not parts[0].startswith("random") or not parts[1].startswith("frame"):
        raise RecordError("unpaired_frame", f"{txt_url}: line {index + 1}: expected "
                                            f"'random<sid>,frame<fid>,<energy>', got {line!r}")
    try:
        reference = float(parts[2])
    except ValueError as err:
        raise RecordError("unpaired_frame", f"{txt_url}: line {index + 1}: reference energy "
                                            f"{parts[2]!r} is not a number") from err
    return parts[0], parts[1], reference


def _frame_record(span, source: str, sid: str, fid: str, reference: float, frame_kind: str, txt_url: str):
    """A frame with its txt line's ids and reference; the frame's own sid/fid, if any, must agree."""
    system_id = f"oc20/{sid}/{fid}"
    try:
        atoms = frame_atoms(span)
    except RecordError as error:
        return BadRecord(system_id, source, error.reason, f"{source}: {error.detail}")
    own = {key: atoms.info[key] for key in ("sid", "fid") if key in atoms.info}
    if own and (oc_id(own.get("sid", sid), "random"), oc_id(own.get("fid", fid), "frame")) != (sid, fid):
        return BadRecord(system_id, source, "unpaired_frame",
                         f"{source}: the frame says sid={own.get('sid')} fid={own.get('fid')} but its line in "
                         f"{txt_url} says {sid},{fid}")
    results = atoms.calc.results if atoms.calc is not None else {}
    if "energy" not in results:
        return BadRecord(system_id, source, "missing_label", f"{source}: {system_id}: field 'energy' missing")
    total = float(results["energy"])
    return record_from_atoms(atoms, source, system_id, energy=total - reference, total_energy=total,
                             dataset="oc20", group_id=f"oc20/{sid}", frame_kind=frame_kind)
