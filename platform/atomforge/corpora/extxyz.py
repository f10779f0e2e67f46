"""extxyz files as independent frames: split a byte stream at frame boundaries, then parse each frame alone.

A frame is a count line `N`, a comment line (extxyz: `key=value` pairs with `Properties=`), and
`N` atom lines, so the next frame starts `N + 2` lines later. `split_frames` finds those
boundaries from the count lines alone, without parsing atom lines, and yields each frame's bytes
with its index and byte offset; `parse_frame` turns one frame's text into `ase.Atoms`. A frame
whose body is malformed (an unknown element, a short force line) is therefore one bad record,
and the frames after it are read as usual.

Two defects break the boundary itself, and are reported as a `FrameSpan` with `error` set:
- a count line that is not a non-negative integer: the lines up to the next line holding a lone
  integer (the next count line: atom lines have >= 4 fields, extxyz comments hold `key=value`)
  are one bad record, and splitting resumes there;
- a file that ends inside a frame (truncated): the incomplete tail is one bad record.

The split is the seam for faster parsers and for byte-range work units: `split_frames` gives
(index, offset, length) for every frame from one sequential scan, and any parser can take a
frame's bytes from there.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO


@dataclass(frozen=True)
class FrameSpan:
    """One frame of an extxyz stream (offsets index the decompressed bytes)."""

    index: int  # frame number in the file, from 0
    offset: int  # byte offset of the frame's count line
    data: bytes  # the frame's lines (count, comment, atoms); empty when `keep_data=False`
    error: str | None = None  # why this span is not a complete frame, else None


def _count(line: bytes) -> int | None:
    """The atom count of a count line, or None when the line is not a lone non-negative integer."""
    token = line.strip()
    return int(token) if token.isdigit() else None


def _looks_like_atom_line(line: bytes) -> bool:
    """An atom line: a symbol (or Z) then at least three coordinates."""
    return len(line.split()) >= 4


class _Lines:
    """Lines of a binary stream with one line of push-back and the byte offset of the next line."""

    def __init__(self, fobj: IO[bytes]) -> None:
        self.fobj, self.offset, self.pending = fobj, 0, None

    def next(self) -> bytes:
        """The next line (b"" at the end)."""
        if self.pending is not None:
            line, self.pending = self.pending, None
        else:
            line = self.fobj.readline()
        self.offset += len(line)
        return line

    def push_back(self, line: bytes) -> None:
        self.pending = line
        self.offset -= len(line)


def _read_frame(lines: _Lines, num_atoms: int, keep: list | None) -> str | None:
    """Consume a frame's comment and atom lines after its count line; the error, or None when complete.

    A lone integer where an atom line should be is the next frame's count line: it is pushed back,
    so a frame with a missing atom line costs that frame only.
    """
    for read in range(num_atoms + 1):
        line = lines.next()
        if not line:
            return f"file ends inside the frame: {max(read - 1, 0)} of {num_atoms} atom lines present (truncated?)"
        if read > 0 and _count(line) is not None:
            lines.push_back(line)
            return f"count line says {num_atoms} atoms but only {read - 1} atom lines come before the next frame"
        if keep is not None:
            keep.append(line)
    return None


def _skip_to_count_line(lines: _Lines, keep: list | None) -> bool:
    """Consume lines up to (not including) the next lone-integer line; whether one was found."""
    while True:
        line = lines.next()
        if not line:
            return False
        if _count(line) is not None:
            lines.push_back(line)
            return True
        if keep is not None:
            keep.append(line)


def split_frames(fobj: IO[bytes], keep_data: bool = True) -> Iterator[FrameSpan]:
    """Frames of a binary extxyz stream, in order, found from count lines only (atom lines not parsed).

    `keep_data=False` yields spans without their bytes (counting frames costs one scan and no
    allocation per frame). Blank lines between frames are skipped. Surplus atom lines after a
    frame (its count line says too few atoms) make that frame bad without taking a frame index,
    so the indices of the frames after it do not shift. Raises ValueError when no line holds an
    atom count (not an xyz file at all).
    """
    lines, index, previous = _Lines(fobj), 0, None
    while True:
        start = lines.offset
        line = lines.next()
        if not line:
            break
        if not line.strip():
            continue
        keep = [line] if keep_data else None
        num_atoms = _count(line)
        if num_atoms is None:
            found = _skip_to_count_line(lines, keep)
            if index == 0 and not found:
                raise ValueError(f"not an (ext)xyz file: no line holds an atom count (first line {_preview(line)})")
            data = b"".join(keep or ())
            if previous is not None and previous.error is None and _looks_like_atom_line(line):
                previous = FrameSpan(previous.index, previous.offset, previous.data + data,
                                     "more atom lines follow than its count line says (count wrong or lines inserted)")
                continue
            span = FrameSpan(index, start, data, f"count line {_preview(line)} is not an atom count")
        else:
            error = _read_frame(lines, num_atoms, keep)
            span = FrameSpan(index, start, b"".join(keep or ()), error)
        if previous is not None:
            yield previous
        previous, index = span, index + 1
    if previous is not None:
        yield previous


def _preview(line: bytes, width: int = 40) -> str:
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    return repr(text if len(text) <= width else text[:width] + "...")


def parse_frame(data: bytes):
    """`ase.Atoms` of one frame's bytes (labels in a SinglePointCalculator, as `ase.io` reads them).

    Raises ValueError naming the field where the error says which one (e.g. an unknown element).
    """
    from ase.io.extxyz import read_xyz

    try:
        return next(read_xyz(io.StringIO(data.decode("utf-8")), 0))
    except KeyError as err:  # ASE's symbol table lookup
        raise ValueError(f"field 'species': unknown element {err}") from err
    except StopIteration as err:
        raise ValueError("no frame in the text") from err
    except Exception as err:  # noqa: BLE001 - ASE's parser raises many types; one message per frame
        raise ValueError(f"{type(err).__name__}: {err}") from err


def frame_atoms(span: FrameSpan):
    """`ase.Atoms` of a split frame, or RecordError ("malformed_frame" / "parse_error") naming frame and byte."""
    from atomforge.corpora.base import RecordError

    where = f"frame {span.index} (byte {span.offset})"
    if span.error is not None:
        raise RecordError("malformed_frame", f"{where}: {span.error}")
    try:
        return parse_frame(span.data)
    except (ValueError, UnicodeDecodeError) as err:
        raise RecordError("parse_error", f"{where}: cannot parse: {err}") from err
