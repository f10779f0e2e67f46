"""Corruption steps applied to copies of the demo corpora, each returning the records it spoils.

Every function edits files in place (xz-compressed ones are decompressed, edited and recompressed)
and returns the system_ids of the clean records it makes unusable, so a test can state
"written ids = clean ids minus exactly these". Frame-level edits in extxyz follow the frame
boundaries of the file as written by the demo generator (count line, comment, N atom lines).
"""

from __future__ import annotations

import lzma
import shutil
from pathlib import Path

import h5py
import numpy as np


def copy_corpus(demo_dir: Path, corpus: str, dest: Path) -> Path:
    """A private copy of one demo corpus folder."""
    shutil.copytree(demo_dir / corpus, dest)
    return dest


def read_text(path: Path) -> str:
    data = path.read_bytes()
    return (lzma.decompress(data) if path.suffix == ".xz" else data).decode()


def write_text(path: Path, text: str) -> None:
    path.write_bytes(lzma.compress(text.encode()) if path.suffix == ".xz" else text.encode())


def txt_of(extxyz: Path) -> Path:
    return extxyz.with_name(extxyz.name.replace(".extxyz", ".txt"))


def oc20_ids(extxyz: Path) -> list[str]:
    """The clean ids of a pair's frames, from its txt lines."""
    return [f"oc20/{sid}/{fid}" for sid, fid, _ in (line.split(",") for line in read_text(txt_of(extxyz)).splitlines())]


def _frames(text: str) -> list[list[str]]:
    lines, frames = text.splitlines(keepends=True), []
    while lines:
        num = int(lines[0])
        frames.append(lines[: num + 2])
        lines = lines[num + 2:]
    return frames


FRAME_EDITS = {  # name -> edit of one frame's lines (count, comment, atoms...)
    "unknown_element": lambda f: [f[0], f[1], "Xx" + f[2][2:], *f[3:]],
    "short_force_line": lambda f: [*f[:2], f[2].rsplit(" ", 1)[0].rstrip() + "\n", *f[3:]],
    "deleted_atom_line": lambda f: [*f[:2], *f[3:]],
    "bad_count_line": lambda f: ["1x\n", *f[1:]],
    "nan_energy": lambda f: [f[0], _set_energy(f[1], "nan"), *f[2:]],
}


def _set_energy(comment: str, value: str) -> str:
    words = [f"energy={value}" if w.startswith("energy=") else w for w in comment.split(" ")]
    return " ".join(words)


def corrupt_frame(extxyz: Path, index: int, kind: str) -> list[str]:
    """Apply FRAME_EDITS[kind] to frame `index`; returns that frame's clean id."""
    frames = _frames(read_text(extxyz))
    frames[index] = FRAME_EDITS[kind](frames[index])
    write_text(extxyz, "".join("".join(f) for f in frames))
    return [oc20_ids(extxyz)[index]]


def delete_txt_line(extxyz: Path, index: int) -> list[str]:
    """Remove line `index` of the pair's txt: every frame of the pair is spoiled (cannot be paired)."""
    ids = oc20_ids(extxyz)
    lines = read_text(txt_of(extxyz)).splitlines(keepends=True)
    write_text(txt_of(extxyz), "".join(lines[:index] + lines[index + 1:]))
    return ids


def duplicate_pair(extxyz: Path, name: str) -> Path:
    """Copy a pair under a new name (same frames, same ids): the copy's frames are duplicates."""
    target = extxyz.with_name(name + extxyz.name[extxyz.name.index(".extxyz"):])
    shutil.copy(extxyz, target)
    shutil.copy(txt_of(extxyz), txt_of(target))
    return target


def ani_group_ids(h5: Path, group: str) -> list[str]:
    with h5py.File(h5) as handle:
        return [f"ani1x/{group}/{i}" for i in range(handle[group]["coordinates"].shape[0])]


def drop_dataset(h5: Path, group: str, name: str) -> list[str]:
    """Delete `group/name` (e.g. wb97x_dz.forces): every conformer of the group is spoiled."""
    with h5py.File(h5, "a") as handle:
        del handle[group][name]
    return ani_group_ids(h5, group)


def misshape_coordinates(h5: Path, group: str) -> list[str]:
    """Coordinates with one atom fewer than atomic_numbers: every conformer of the group is spoiled."""
    with h5py.File(h5, "a") as handle:
        data = handle[group]["coordinates"][()]
        del handle[group]["coordinates"]
        handle[group]["coordinates"] = data[:, :-1]
    return ani_group_ids(h5, group)


def nan_conformer(h5: Path, group: str, index: int) -> list[str]:
    """One conformer's energy set to NaN: only that conformer is spoiled."""
    with h5py.File(h5, "a") as handle:
        energies = handle[group]["wb97x_dz.energy"][()]
        energies[index] = np.nan
        handle[group]["wb97x_dz.energy"][...] = energies
    return [f"ani1x/{group}/{index}"]
