"""Splitting extxyz at frame boundaries: frames found from count lines, a bad frame costs only itself."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from atomforge.corpora.base import RecordError
from atomforge.corpora.extxyz import frame_atoms, split_frames


def _frames_text(demo_dir) -> bytes:
    return (demo_dir / "oc20" / "0.extxyz").read_bytes()


def _frame_lines(data: bytes) -> list[list[bytes]]:
    """The clean file's frames as lists of lines (the test's own splitter: count line + N + 1 lines)."""
    lines, frames = data.splitlines(keepends=True), []
    while lines:
        num = int(lines[0])
        frames.append(lines[: num + 2])
        lines = lines[num + 2:]
    return frames


def test_split_gives_every_frame_with_its_offset_and_bytes(demo_dir):
    import ase.io

    data = _frames_text(demo_dir)
    spans = list(split_frames(io.BytesIO(data)))
    reference = ase.io.read(demo_dir / "oc20" / "0.extxyz", index=":")
    assert len(spans) == len(reference) == len(list(split_frames(io.BytesIO(data), keep_data=False)))
    assert b"".join(s.data for s in spans) == data
    for span, atoms in zip(spans, reference):
        assert span.error is None and data[span.offset:].startswith(span.data)
        parsed = frame_atoms(span)
        np.testing.assert_array_equal(parsed.positions, atoms.positions)
        assert parsed.get_potential_energy() == atoms.get_potential_energy()


CORRUPTIONS = {
    "unknown_element": lambda frame: [frame[0], frame[1], b"Xx" + frame[2][2:], *frame[3:]],
    "short_force_line": lambda frame: [*frame[:2], frame[2].rsplit(b" ", 1)[0] + b"\n", *frame[3:]],
    "deleted_atom_line": lambda frame: [*frame[:2], *frame[3:]],
    "inserted_atom_line": lambda frame: [*frame, frame[-1]],
    "bad_count_line": lambda frame: [b"1x\n", *frame[1:]],
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_each_corruption_costs_exactly_its_frame(demo_dir, kind):
    frames = _frame_lines(_frames_text(demo_dir))
    victim = len(frames) // 2
    data = b"".join(b"".join(CORRUPTIONS[kind](f) if i == victim else f) for i, f in enumerate(frames))
    spans = list(split_frames(io.BytesIO(data)))
    assert [s.index for s in spans] == list(range(len(frames)))
    bad = []
    for span in spans:
        try:
            frame_atoms(span)
        except RecordError as error:
            bad.append((span.index, error.reason))
            assert f"frame {span.index} (byte {span.offset})" in error.detail
    assert [index for index, _ in bad] == [victim]


def test_random_subsets_of_corruptions_cost_exactly_those_frames(demo_dir):
    frames = _frame_lines(_frames_text(demo_dir))
    clean = [frame_atoms(s) for s in split_frames(io.BytesIO(b"".join(b"".join(f) for f in frames)))]
    rng = random.Random(11)
    for _ in range(12):
        victims = set(rng.sample(range(len(frames)), rng.randint(1, len(frames) // 2)))
        victims -= {v + 1 for v in victims}  # two adjacent corrupt count lines read as one region
        kinds = {v: rng.choice(sorted(CORRUPTIONS)) for v in victims}
        data = b"".join(b"".join(CORRUPTIONS[kinds[i]](f) if i in kinds else f) for i, f in enumerate(frames))
        good, bad = {}, set()
        for span in split_frames(io.BytesIO(data)):
            try:
                good[span.index] = frame_atoms(span)
            except RecordError:
                bad.add(span.index)
        assert bad == victims, kinds
        assert set(good) == set(range(len(frames))) - victims
        for index, atoms in good.items():
            np.testing.assert_array_equal(atoms.positions, clean[index].positions)


def test_truncated_file_and_not_an_xyz_file(demo_dir):
    data = _frames_text(demo_dir)
    frames = _frame_lines(data)
    cut = data[: len(data) - len(frames[-1][-1]) - len(frames[-1][-2])]  # last frame loses two lines
    spans = list(split_frames(io.BytesIO(cut)))
    assert len(spans) == len(frames) and [s.error is None for s in spans].count(False) == 1
    assert "truncated" in spans[-1].error
    with pytest.raises(ValueError, match="not an .*xyz file"):
        list(split_frames(io.BytesIO(b"this is not\nan xyz file\n")))
