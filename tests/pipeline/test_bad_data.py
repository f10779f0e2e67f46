"""No record is lost, mis-paired or served stale: corrupted copies of the demo corpora through the pipeline.

Each test corrupts a copy of a demo corpus (tests/pipeline/corruptions.py), preprocesses it
in-process and states the exact counts against the clean run: read is unchanged (every record
the source holds is counted), written ids are the clean ids minus exactly the spoiled records,
the quarantine counts are the clean ones plus one entry per spoiled record, and no written
value differs from the clean run's value for the same id.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import corruptions as bad
import pytest
from atomforge.corpora import read_corpus
from atomforge.pipeline import PipelineConfig, run_pipeline
from atomforge.pipeline.duplicates import tar_rows
from atomforge.pipeline.executor import EmptyDatasetError
from atomforge.shards import open_shards

SPLITS = ("train", "val", "test")


def preprocess(corpus: str, folder: Path, output: Path, formats=("parquet",), **options) -> dict:
    """The pipeline in-process, small graphs (cutoff 4 Å, K 8) so each run takes about a second."""
    config = PipelineConfig.for_corpus(corpus, str(folder), str(output), cutoff=4.0, max_neighbors=8, shard_size=5,
                                       formats=formats, reader_options=options)
    return run_pipeline(config, read_corpus(corpus, str(folder), **options), backend="local")


def rows(output: Path) -> dict[str, dict]:
    """system_id -> (energy, group, dataset) of every written row; each id written once."""
    shards = open_shards(str(output))
    found = [r for split in SPLITS for r in shards.table(split, columns=["system_id", "energy", "group_id"]).to_pylist()]
    assert len(found) == len({r["system_id"] for r in found}) == shards.manifest["counts"]["written"]
    return {r["system_id"]: r for r in found}


def quarantined(output: Path) -> dict[str, str]:
    table = open_shards(str(output)).quarantine().to_pylist()
    return {r["system_id"]: r["reason"] for r in table}


class Clean:
    """A clean run's manifest, rows and quarantine, for one corpus."""

    def __init__(self, corpus: str, folder: Path, output: Path) -> None:
        self.corpus, self.folder = corpus, folder
        self.manifest = preprocess(corpus, folder, output)
        self.rows, self.quarantine = rows(output), quarantined(output)

    def expect(self, output: Path, manifest: dict, spoiled: list[str], reason: str) -> None:
        """Exact counts and values of a corrupted run, given the clean ids it spoils and their reason."""
        spoiled_set = set(spoiled)
        counts = manifest["counts"]
        assert counts["read"] == self.manifest["counts"]["read"]
        assert counts["read_complete"] and counts["read"] == counts["written"] + counts["quarantined"]
        written = rows(output)
        assert set(written) == set(self.rows) - spoiled_set  # nothing else lost
        assert all(written[i]["energy"] == self.rows[i]["energy"] and written[i]["group_id"] == self.rows[i]["group_id"]
                   for i in written)  # nothing mis-labelled
        expected = Counter(r for i, r in self.quarantine.items() if i not in spoiled_set) + Counter({reason: len(spoiled)})
        assert manifest["quarantine"]["counts"] == dict(expected)


@pytest.fixture(scope="module")
def clean_oc20(demo_dir, tmp_path_factory) -> Clean:
    return Clean("oc20", demo_dir / "oc20", tmp_path_factory.mktemp("clean") / "oc20")


@pytest.fixture(scope="module")
def clean_ani(demo_dir, tmp_path_factory) -> Clean:
    return Clean("ani1x", demo_dir / "ani1x", tmp_path_factory.mktemp("clean") / "ani1x")


def test_txt_missing_a_middle_line_quarantines_the_pair_and_writes_no_mispaired_row(clean_oc20, demo_dir, tmp_path):
    folder = bad.copy_corpus(demo_dir, "oc20", tmp_path / "oc20")
    spoiled = bad.delete_txt_line(folder / "0.extxyz", 5)
    manifest = preprocess("oc20", folder, tmp_path / "out")
    clean_oc20.expect(tmp_path / "out", manifest, spoiled, "unpaired_frame")
    assert len(spoiled) == len(bad.oc20_ids(demo_dir / "oc20" / "0.extxyz")) > 10


def test_missing_txt_quarantines_the_pair_and_its_arrival_is_a_change(clean_oc20, demo_dir, tmp_path):
    folder = bad.copy_corpus(demo_dir, "oc20", tmp_path / "oc20")
    txt = (folder / "1.txt.xz").read_bytes()
    (folder / "1.txt.xz").unlink()
    manifest = preprocess("oc20", folder, tmp_path / "out")
    clean_oc20.expect(tmp_path / "out", manifest, bad.oc20_ids(demo_dir / "oc20" / "1.extxyz.xz"), "unpaired_frame")
    (folder / "1.txt.xz").write_bytes(txt)
    again = preprocess("oc20", folder, tmp_path / "out")
    assert again["previous"]["changed_sources"] == [{"path": str(folder / "1.txt.xz"), "change": "modified"}]
    assert rows(tmp_path / "out") == clean_oc20.rows


@pytest.mark.parametrize("kind", sorted(bad.FRAME_EDITS))
def test_one_bad_extxyz_frame_costs_only_that_frame(clean_oc20, demo_dir, tmp_path, kind):
    folder = bad.copy_corpus(demo_dir, "oc20", tmp_path / "oc20")
    spoiled = bad.corrupt_frame(folder / "0.extxyz", 6, kind) + bad.corrupt_frame(folder / "1.extxyz.xz", 2, kind)
    reason = {"nan_energy": "nan_label", "deleted_atom_line": "malformed_frame",
              "bad_count_line": "malformed_frame"}.get(kind, "parse_error")
    clean_oc20.expect(tmp_path / "out", preprocess("oc20", folder, tmp_path / "out"), spoiled, reason)


@pytest.mark.parametrize("corrupt, reason", [
    (lambda h5, group: bad.drop_dataset(h5, group, "wb97x_dz.forces"), "missing_field"),
    (bad.misshape_coordinates, "bad_shape"),
])
def test_one_bad_hdf5_group_costs_only_its_conformers(clean_ani, demo_dir, tmp_path, corrupt, reason):
    folder = bad.copy_corpus(demo_dir, "ani1x", tmp_path / "ani1x")
    h5 = folder / "ani1x-demo.h5"
    group = sorted({i.split("/")[1] for i in clean_ani.rows})[1]  # the second of four: later groups follow
    spoiled = corrupt(h5, group)
    clean_ani.expect(tmp_path / "out", preprocess("ani1x", folder, tmp_path / "out"), spoiled, reason)


def test_fixed_input_builds_a_new_version_that_names_the_changed_source(clean_oc20, demo_dir, tmp_path):
    folder = bad.copy_corpus(demo_dir, "oc20", tmp_path / "oc20")
    original = (folder / "0.txt").read_bytes()
    bad.delete_txt_line(folder / "0.extxyz", 5)
    broken = preprocess("oc20", folder, tmp_path / "out")
    assert broken["counts"]["written"] < clean_oc20.manifest["counts"]["written"]
    (folder / "0.txt").write_bytes(original)  # the user fixes the input and reruns the same command
    fixed = preprocess("oc20", folder, tmp_path / "out")
    assert fixed["version"] != broken["version"] and fixed["fingerprint"] == broken["fingerprint"]
    assert fixed["previous"] == {"version": broken["version"],
                                 "changed_sources": [{"path": str(folder / "0.txt"), "change": "modified"}]}
    assert rows(tmp_path / "out") == clean_oc20.rows and fixed["counts"]["quarantined"] == 0


def test_touched_but_identical_source_is_unchanged(clean_oc20, demo_dir, tmp_path):
    import os

    folder = bad.copy_corpus(demo_dir, "oc20", tmp_path / "oc20")
    first = preprocess("oc20", folder, tmp_path / "out")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")}
    os.utime(folder / "0.txt", (1, 1))
    assert preprocess("oc20", folder, tmp_path / "out") == first
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")} == before


def test_duplicates_across_files_and_formats_are_quarantined_keeping_the_first(clean_oc20, demo_dir, tmp_path):
    folder = bad.copy_corpus(demo_dir, "oc20", tmp_path / "oc20")
    bad.duplicate_pair(folder / "1.extxyz.xz", "2")  # a second copy of file 1's frames
    copies = bad.oc20_ids(folder / "1.extxyz.xz")
    manifest = preprocess("oc20", folder, tmp_path / "out", formats=("parquet", "webdataset"))
    counts = manifest["counts"]
    assert counts["read"] == clean_oc20.manifest["counts"]["read"] + len(copies)
    assert counts["written"] == clean_oc20.manifest["counts"]["written"]
    assert manifest["quarantine"]["counts"] == {"duplicate": len(copies)}
    assert rows(tmp_path / "out") == clean_oc20.rows
    table = open_shards(str(tmp_path / "out")).quarantine().to_pylist()
    assert sorted(r["system_id"] for r in table) == sorted(copies)
    assert all(r["source"].endswith("2.extxyz.xz") and "1.extxyz.xz" in r["detail"] for r in table)  # first kept
    shards = open_shards(str(tmp_path / "out"))
    assert shards.verify() == [] and shards.missing() == []
    tar_ids = sorted(r["system_id"] for split in SPLITS for path in shards.paths(split, "webdataset")
                     for r in tar_rows(Path(path).read_bytes()))
    assert tar_ids == sorted(clean_oc20.rows)
    stats, clean_stats = manifest["statistics"]["oc20"], clean_oc20.manifest["statistics"]["oc20"]
    assert stats["num_structures"] == clean_stats["num_structures"]
    assert stats["energy_mean"] == pytest.approx(clean_stats["energy_mean"], abs=1e-9)


def test_cross_format_duplicates_share_one_identity(clean_oc20, demo_dir, tmp_path):
    import ase.db
    from ase.calculators.singlepoint import SinglePointCalculator
    from atomforge.schema import to_ase

    folder = bad.copy_corpus(demo_dir, "oc20", tmp_path / "oc20")
    frames = list(read_corpus("oc20", str(demo_dir / "oc20" / "1.extxyz.xz")))
    with ase.db.connect(str(folder / "again.aselmdb"), type="aselmdb") as db:
        for s in frames:
            atoms = to_ase(s)
            atoms.calc = SinglePointCalculator(atoms, energy=s.total_energy, forces=s.forces)
            sid, fid = s.system_id.split("/")[1:]
            db.write(atoms, data={"sid": int(sid[6:]), "fid": int(fid[5:]), "ref_energy": s.total_energy - s.energy})
    manifest = preprocess("oc20", folder, tmp_path / "out")
    assert manifest["quarantine"]["counts"] == {"duplicate": len(frames)}
    assert rows(tmp_path / "out") == clean_oc20.rows


def test_empty_input_is_an_error_unless_allowed(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.extxyz").write_text("")
    with pytest.raises(EmptyDatasetError, match="no structure to publish.*--allow-empty"):
        preprocess("ase", tmp_path / "in", tmp_path / "out")
    config = PipelineConfig.for_corpus("ase", str(tmp_path / "in"), str(tmp_path / "out"))
    manifest = run_pipeline(config, read_corpus("ase", str(tmp_path / "in")), backend="local", allow_empty=True)
    assert manifest["counts"]["read"] == manifest["counts"]["written"] == 0


def test_transition1x_missing_endpoints_are_counted(demo_dir, tmp_path):
    import h5py

    folder = bad.copy_corpus(demo_dir, "transition1x", tmp_path / "t1x")
    with h5py.File(folder / "transition1x-demo.h5", "a") as handle:
        formula = sorted(handle["train"])[0]
        rxn = sorted(handle["train"][formula])[0]
        del handle[f"train/{formula}/{rxn}/reactant"]
    manifest = preprocess("transition1x", folder, tmp_path / "out", include_endpoints=True)
    clean = preprocess("transition1x", demo_dir / "transition1x", tmp_path / "clean", include_endpoints=True)
    assert manifest["counts"]["read"] == clean["counts"]["read"]
    assert manifest["quarantine"]["counts"] == {"missing_endpoint": 1}
    assert set(rows(tmp_path / "clean")) - set(rows(tmp_path / "out")) == {f"transition1x/{formula}/{rxn}/reactant/0"}


def test_random_subsets_of_corruptions_lose_exactly_the_corrupted_records(clean_oc20, demo_dir, tmp_path):
    rng = random.Random(5)
    files = ("0.extxyz", "1.extxyz.xz")
    for trial in range(4):
        folder = bad.copy_corpus(demo_dir, "oc20", tmp_path / f"oc20-{trial}")
        spoiled: set[str] = set()
        for name in files:
            num = len(bad.oc20_ids(folder / name))
            if rng.random() < 0.25:
                spoiled |= set(bad.delete_txt_line(folder / name, rng.randrange(num)))
                continue
            victims = sorted(rng.sample(range(num), rng.randint(0, num // 3)))
            victims = [v for v in victims if v - 1 not in victims]  # adjacent bad count lines read as one region
            for index in victims:
                spoiled |= set(bad.corrupt_frame(folder / name, index, rng.choice(sorted(bad.FRAME_EDITS))))
        output = tmp_path / f"out-{trial}"
        manifest = preprocess("oc20", folder, output)
        assert set(rows(output)) == set(clean_oc20.rows) - spoiled, f"trial {trial}"
        assert manifest["counts"]["read"] == clean_oc20.manifest["counts"]["read"]
        assert manifest["counts"]["quarantined"] == len(spoiled)
        shutil.rmtree(folder)
