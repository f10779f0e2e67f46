"""The columnar hot path equals the per-structure path: same table bytes, same quarantine reasons."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from atomforge.graph import neighbor_graph
from atomforge.pipeline import PipelineConfig
from atomforge.pipeline.columnar import bad_records, build_graphs, check_ranges, split_labels, take_edges
from atomforge.pipeline.formats import batch_to_arrow
from atomforge.pipeline.stages import split_of
from atomforge.schema import Structure, from_ase, rows_to_table, to_row
from atomforge.structure_batch import StructureBatch, Verdicts, check_labels_and_fields, concatenate
from corpus_files import molecules, slabs


def config(**changes) -> PipelineConfig:
    return PipelineConfig.for_corpus("ase", "in", "out", cutoff=6.0, max_neighbors=30, **changes)


@functools.cache
def _slabs(count: int) -> tuple:
    return tuple(slabs(count))


@functools.cache
def varied() -> tuple[Structure, ...]:
    """Slabs (forces, fixed, tags), molecules (no cell), a stressed bulk, an unlabelled pair, a wire."""
    from ase.build import bulk

    out = [from_ase(a, f"slab{i}", tags=np.arange(len(a)) % 3, fixed=np.arange(len(a)) < 4)
           for i, a in enumerate(_slabs(2))]
    out += [from_ase(a, f"mol{i}", group_id=f"g{i % 2}") for i, a in enumerate(molecules(3))]
    cu = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    out.append(Structure("bulk", cu.numbers, cu.positions, cell=cu.cell.array, pbc=True, energy=-3.5,
                         stress=np.arange(6) * 0.01, frame_kind="md"))
    out.append(Structure("bare", [1, 1], [[0, 0, 0], [0.7, 0, 0]]))
    out.append(Structure("wire", [6, 6], [[0, 0, 0], [0.7, 0.6, 1.2]], cell=np.diag([0, 0, 2.5]),
                         pbc=[False, False, True], energy=1.0))
    return tuple(out)


def test_batch_table_equals_row_by_row_table():
    structures, cfg = varied(), config()
    batch = StructureBatch.from_structures(structures)
    verdicts = Verdicts(batch)
    check_labels_and_fields(batch, verdicts)
    check_ranges(batch, cfg, set(), verdicts)
    edges = build_graphs(batch, cfg, verdicts)
    assert verdicts.ok.all()
    splits = split_labels(batch.group_id, cfg.split_fractions, cfg.seed)
    assert list(splits) == [split_of(s, cfg.split_fractions, cfg.seed) for s in structures]
    rows = [to_row(s, neighbor_graph(s, cfg.cutoff, cfg.k_store, skin=cfg.skin), split)
            for s, split in zip(structures, splits)]
    assert batch_to_arrow(batch, edges, splits).equals(rows_to_table(rows))
    pick = np.array([5, 0, 3])  # a subset in another order: take() on both sides
    sub = batch_to_arrow(batch.take(pick), take_edges(edges, pick), splits[pick])
    assert sub.equals(rows_to_table([rows[i] for i in pick]))


def test_structures_round_trip_through_a_batch():
    structures = varied()
    batch = concatenate([StructureBatch.from_structures(structures[:3]),
                         StructureBatch.from_structures(structures[3:])])
    for original, back in zip(structures, (batch.structure(i) for i in range(len(batch)))):
        for name in ("system_id", "atomic_numbers", "positions", "cell", "pbc", "energy", "forces", "stress",
                     "fixed", "tags", "dataset", "group_id", "frame_kind"):
            a, b = getattr(original, name), getattr(back, name)
            assert (a is None and b is None) or np.array_equal(a, b), name


def corrupt(batch: StructureBatch, index: int, how: str) -> str:
    """Damage structure `index` of `batch` in place; returns the reason the pipeline must give."""
    a, b = batch.atom_offsets[index], batch.atom_offsets[index + 1]
    if how == "nan_energy":
        batch.energy[index] = np.nan
        return "nan_label"
    if how == "inf_force":
        batch.forces[a + 1, 2] = np.inf
        return "nan_label"
    if how == "nan_position":
        batch.positions[a, 0] = np.nan
        return "validation"
    if how == "bad_z":
        batch.atomic_numbers[a] = 0
        return "validation"
    if how == "singular_cell":
        batch.cell[index][1] = batch.cell[index][0]
        return "validation"
    if how == "close_image":  # two atoms 0.05 Å apart only through the periodic boundary
        batch.positions[a] = batch.positions[a + 1] + batch.cell[index][0] - [0.05, 0, 0]
        return "validation"
    if how == "huge_force":
        batch.forces[b - 1, 0] = 5_000.0
        return "force_out_of_range"
    if how == "huge_energy":
        batch.energy[index] = 1e9
        return "energy_out_of_range"
    if how == "duplicate":
        batch.system_id[index] = batch.system_id[0]
        return "duplicate"
    raise AssertionError(how)


DAMAGE = ["nan_energy", "inf_force", "nan_position", "bad_z", "singular_cell", "close_image", "huge_force",
          "huge_energy", "duplicate"]


def test_written_ids_are_clean_ids_minus_exactly_the_corrupted_ones():
    clean = [from_ase(a, f"slab{i}") for i, a in enumerate(_slabs(len(DAMAGE) + 3))]
    batch = StructureBatch.from_structures(clean)
    expected = {}
    for index, how in enumerate(DAMAGE, start=1):
        expected[str(clean[index].system_id)] = (corrupt(batch, index, how), how)
    verdicts = Verdicts(batch)
    check_labels_and_fields(batch, verdicts)
    check_ranges(batch, config(), set(), verdicts)
    build_graphs(batch, config(), verdicts)
    bad = {r.system_id if r.reason != "duplicate" else f"dup:{r.source}": r for r in bad_records(verdicts)}
    written = {str(batch.system_id[i]) for i in np.flatnonzero(verdicts.ok)}
    damaged = {str(clean[i].system_id) for i in range(1, len(DAMAGE) + 1)}
    assert written == {str(s.system_id) for s in clean} - damaged
    assert len(bad) == len(DAMAGE)
    for sid, (reason, how) in expected.items():
        record = bad.get(sid) or bad[f"dup:{sid}"]
        assert record.reason == reason, how
        assert sid in record.detail or how == "duplicate"


@pytest.mark.parametrize("how", DAMAGE[:6])
def test_reasons_match_the_structure_constructor(how):
    """Each field rule rejects what `Structure(...)` rejects, naming the same field."""
    s = from_ase(_slabs(1)[0], "one")
    batch = StructureBatch.from_structures([s, s.replace(system_id="two")])
    corrupt(batch, 1, how)
    verdicts = Verdicts(batch)
    check_labels_and_fields(batch, verdicts)
    build_graphs(batch, config(), verdicts)
    detail = bad_records(verdicts)[0].detail
    a, b = batch.atom_offsets[1], batch.atom_offsets[2]
    with pytest.raises(ValueError) as error:
        Structure("two", batch.atomic_numbers[a:b], batch.positions[a:b], cell=batch.cell[1], pbc=batch.pbc[1],
                  energy=batch.energy[1], forces=batch.forces[a:b])
    field = str(error.value).split("field '")[1].split("'")[0]
    assert f"field '{field}'" in detail


def test_batch_statistics_equal_structure_by_structure():
    from atomforge.pipeline.label_stats import StatsAccumulator

    structures = varied()
    one, whole = StatsAccumulator(), StatsAccumulator()
    for s in structures:
        one.add(s)
    whole.add_batch(StructureBatch.from_structures(structures))
    a, b = one.to_json(), whole.to_json()
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], float) or (isinstance(a[name], list) and a[name] and isinstance(a[name][0], float)):
            np.testing.assert_allclose(a[name], b[name], rtol=1e-12, err_msg=name)  # summation order differs
        else:
            assert a[name] == b[name], name
