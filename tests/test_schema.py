"""The structure record: validation, ase.Atoms and Arrow round trips."""

import numpy as np
import pyarrow as pa
import pytest
from ase.build import fcc111, molecule
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from atomforge.graph import neighbor_graph
from atomforge.schema import (
    ARROW_SCHEMA,
    FIELDS,
    Structure,
    from_ase,
    from_row,
    graph_from_row,
    rows_to_table,
    to_ase,
    to_row,
)


def labelled_slab() -> Structure:
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    slab.set_constraint(FixAtoms(indices=[0, 1, 2, 3]))
    slab.set_tags([0] * 8 + [1] * 4)
    slab.calc = EMT()
    slab.get_potential_energy()
    slab.get_stress()
    return from_ase(slab, "test/slab", dataset="oc20", frame_kind="relax", total_energy=-123456.789012345)


def test_every_field_documents_shape_and_unit():
    assert [f.name for f in FIELDS] == ARROW_SCHEMA.names
    for f in FIELDS:
        assert f.shape.startswith("(") and f.unit and f.doc


def test_ase_round_trip_is_exact():
    s = labelled_slab()
    back = from_ase(to_ase(s), s.system_id, dataset=s.dataset, frame_kind=s.frame_kind, total_energy=s.total_energy)
    np.testing.assert_array_equal(back.positions, s.positions)
    np.testing.assert_array_equal(back.forces, s.forces)
    np.testing.assert_array_equal(back.stress, s.stress)
    np.testing.assert_array_equal(back.fixed, s.fixed)
    np.testing.assert_array_equal(back.tags, s.tags)
    assert back.energy == s.energy and back.fixed[:4].all() and not back.fixed[4:].any()


def test_arrow_round_trip_keeps_float64_energy_and_float32_positions():
    s = labelled_slab()
    s.energy = -98765.43210987654  # meV matters at 10^4-10^5 eV: must survive exactly
    graph = neighbor_graph(s, 6.0, max_neighbors=12)
    table = rows_to_table([to_row(s, graph, split="train")])
    assert table.schema == ARROW_SCHEMA
    row = table.to_pylist()[0]
    back = from_row(row)
    assert back.energy == s.energy and back.total_energy == s.total_energy
    np.testing.assert_array_equal(back.positions, s.positions.astype(np.float32))
    np.testing.assert_array_equal(back.forces, s.forces.astype(np.float32))
    np.testing.assert_array_equal(back.stress, s.stress)
    np.testing.assert_array_equal(back.cell, s.cell)
    assert back.pbc.tolist() == s.pbc.tolist() and back.fixed.tolist() == s.fixed.tolist()
    stored = graph_from_row(row)
    np.testing.assert_array_equal(stored.edge_index, graph.edge_index)
    np.testing.assert_array_equal(stored.shifts, graph.shifts)
    assert row["num_edges"] == graph.num_edges and row["split"] == "train"
    assert isinstance(table.column("positions").type, pa.ListType)


def test_molecule_has_no_cell():
    atoms = molecule("H2O")
    s = from_ase(atoms, "mol/h2o")
    assert s.cell is None and not s.pbc.any()
    assert from_row(to_row(s)).cell is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"positions": np.array([[0, 0, 0], [np.nan, 0, 0]])}, "positions"),
        ({"positions": np.array([[0, 0, 0], [np.inf, 0, 0]])}, "positions"),
        ({"positions": np.zeros((3, 3)) + np.arange(3)[:, None]}, "positions"),  # 3 positions, 2 atoms
        ({"atomic_numbers": np.array([1, 119])}, "atomic_numbers"),
        ({"atomic_numbers": np.array([0, 1])}, "atomic_numbers"),
        ({"cell": np.diag([5.0, 5.0, 0.0]), "pbc": [True, True, True]}, "cell"),
        ({"positions": np.array([[0, 0, 0], [0.05, 0, 0]])}, "positions"),
        ({"forces": np.zeros((3, 3))}, "forces"),
        ({"energy": float("nan")}, "energy"),
        ({"frame_kind": "sideways"}, "frame_kind"),
    ],
)
def test_invalid_records_name_system_and_field(changes, field):
    base = {"system_id": "corpus/sys42", "atomic_numbers": [1, 8], "positions": [[0, 0, 0], [0.96, 0, 0]]}
    base.update(changes)
    with pytest.raises(ValueError, match=rf"corpus/sys42: field '{field}'"):
        Structure(**base)


def test_close_periodic_images_are_caught():
    # Two atoms 0.05 Å apart only through the periodic boundary.
    with pytest.raises(ValueError, match="only 0.0500 Å apart"):
        Structure("pbc/close", [1, 1], [[0.01, 0, 0], [4.96, 0, 0]], cell=np.eye(3) * 5.0, pbc=[True, True, True])
