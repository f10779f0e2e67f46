"""Stages on their own: split assignment, validation reasons, label statistics."""

from __future__ import annotations

import numpy as np
import pytest
from atomforge.corpora.base import BadRecord
from atomforge.pipeline import PipelineConfig
from atomforge.pipeline.label_stats import StatsAccumulator, merge_all
from atomforge.pipeline.stages import Validator, split_of
from atomforge.schema import Structure, from_ase
from corpus_files import molecules, slabs


def config(**changes) -> PipelineConfig:
    return PipelineConfig.for_corpus("ase", "in", "out", **changes)


def test_split_is_by_group_deterministic_and_follows_fractions():
    s = from_ase(molecules(1)[0], "x")
    splits = [split_of(s.replace(group_id=f"g{i}"), (0.8, 0.1, 0.1), seed=3) for i in range(800)]
    other = from_ase(slabs(1)[0], "y")
    assert split_of(other.replace(group_id="g7"), (0.8, 0.1, 0.1), 3) == splits[7]  # the group decides
    fractions = [splits.count(name) / len(splits) for name in ("train", "val", "test")]
    assert np.allclose(fractions, (0.8, 0.1, 0.1), atol=0.05)
    assert splits != [split_of(s.replace(group_id=f"g{i}"), (0.8, 0.1, 0.1), seed=4) for i in range(800)]


def test_official_split_wins_and_bad_official_split_is_rejected():
    s = from_ase(molecules(1)[0], "x")
    s.info["split"] = "val"
    assert split_of(s, (1.0, 0.0, 0.0), 0) == "val"
    s.info["split"] = "holdout"
    with pytest.raises(ValueError, match="holdout"):
        split_of(s, (1.0, 0.0, 0.0), 0)


def test_validator_reasons():
    base = from_ase(molecules(1)[0], "m0")
    validate = Validator(config(max_atoms=6, max_abs_force=50.0, max_abs_energy_per_atom=100.0), "src")
    assert validate(base) is base
    cases = {
        "duplicate": base,
        "too_many_atoms": from_ase(slabs(1)[0], "big"),
        "energy_out_of_range": base.replace(system_id="e", energy=-1e4),
        "force_out_of_range": base.replace(system_id="f", forces=np.full((5, 3), 60.0)),
    }
    for reason, record in cases.items():
        out = validate(record)
        assert isinstance(out, BadRecord) and out.reason == reason and out.source == "src"
    passthrough = BadRecord("b", "src", "nan_label", "x")
    assert validate(passthrough) is passthrough


def test_statistics_match_direct_least_squares_and_merge():
    structures = [from_ase(a, f"s{i}") for i, a in enumerate(slabs(3) + molecules(6))]
    x = np.array([np.bincount(s.atomic_numbers, minlength=119) for s in structures], dtype=float)
    y = np.array([s.energy for s in structures])
    present = np.flatnonzero(x.sum(0))
    w = np.linalg.lstsq(x[:, present], y, rcond=None)[0]
    residual = y - x[:, present] @ w
    whole = StatsAccumulator()
    for s in structures:
        whole.add(s)
    halves = [StatsAccumulator(), StatsAccumulator()]
    for i, s in enumerate(structures):
        halves[i % 2].add(s)
    merged = merge_all([{"d": h.to_json()} for h in halves])["d"].finalize()
    stats = whole.finalize()
    for key in ("energy_mean", "energy_std", "force_rms"):
        assert stats[key] == pytest.approx(merged[key], rel=1e-9, abs=1e-9)
    assert stats["linear_reference"] == pytest.approx(merged["linear_reference"], rel=1e-9)
    assert stats["num_atoms_histogram"] == merged["num_atoms_histogram"]
    ref = stats["linear_reference"]
    assert [ref[str(z)] for z in present] == pytest.approx(w, rel=1e-6, abs=1e-8)
    assert stats["energy_mean"] == pytest.approx(residual.mean(), abs=1e-8)
    assert stats["energy_std"] == pytest.approx(residual.std(), rel=1e-5)
    forces = np.concatenate([s.forces.astype(np.float32).reshape(-1) for s in structures]).astype(float)
    assert stats["force_rms"] == pytest.approx(np.sqrt(np.mean(forces**2)))
    assert sum(stats["num_atoms_histogram"]["count"]) == len(structures)


def test_unlabelled_structures_count_but_do_not_fit():
    acc = StatsAccumulator()
    acc.add(Structure("u", [1, 1], [[0, 0, 0], [0.7, 0, 0]]))
    stats = acc.finalize()
    assert stats["num_structures"] == 1 and stats["num_with_energy"] == 0 and stats["linear_reference"] == {}


def test_fast_arrow_builder_equals_the_schema_builder():
    from atomforge.graph import neighbor_graph
    from atomforge.pipeline.formats import rows_to_arrow
    from atomforge.schema import rows_to_table, to_row

    structures = [from_ase(a, f"s{i}") for i, a in enumerate(slabs(2) + molecules(3))]
    rows = [to_row(s, neighbor_graph(s, 6.0, 40, skin=0.5), "train") for s in structures]
    rows.append(to_row(Structure("bare", [1, 1], [[0, 0, 0], [0.7, 0, 0]]), None, None))  # nulls everywhere
    assert rows_to_arrow(rows).equals(rows_to_table(rows))
    assert rows_to_arrow(rows[:0]).equals(rows_to_table(rows[:0]))
