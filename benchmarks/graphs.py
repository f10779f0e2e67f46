"""Neighbor-graph build time (ours on vesin vs ASE, matscipy, torch all-pairs) and shard bytes per structure.

    python benchmarks/graphs.py [--json bench_out/graphs.json] [--repeats N]
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import vesin
from ase.build import add_adsorbate, bulk, fcc111, molecule
from ase.neighborlist import neighbor_list
from atomforge.graph import _vesin_box, neighbor_graph
from atomforge.schema import from_ase, rows_to_table, to_row
from matscipy.neighbours import neighbour_list as matscipy_list
from torch_geometric.data import Data


def oc20_like_slab():
    slab = fcc111("Pt", (4, 4, 5), vacuum=8.0)  # 80 atoms
    add_adsorbate(slab, "O", 1.8, "fcc")
    slab.pbc = True
    slab.positions += np.random.default_rng(0).normal(0, 0.05, slab.positions.shape)
    return slab


def cases():
    mol = molecule("C6H6") + molecule("CH3CH2OH")
    mol.positions[12:] += [6.0, 0, 0]
    big = bulk("Cu", "fcc", a=3.6, cubic=True) * (5, 5, 10)  # 1000 atoms
    big.positions += np.random.default_rng(1).normal(0, 0.05, big.positions.shape)
    slab = oc20_like_slab()
    return [("slab 81 atoms, 6 Å", slab, 6.0), ("slab 81 atoms, 12 Å", slab, 12.0),
            ("molecule 21 atoms, 6 Å", mol, 6.0), ("bulk 1000 atoms, 12 Å", big, 12.0)]


def torch_all_pairs(atoms, cutoff):
    """Plain torch: all pairs over every image shift within reach (the naive baseline)."""
    pos = torch.as_tensor(atoms.positions)
    cell = torch.as_tensor(atoms.cell.array)
    if atoms.pbc.any():
        inv_heights = torch.linalg.norm(torch.linalg.inv(cell), dim=0)
        reach = [int(np.ceil(cutoff * float(h))) if p else 0 for h, p in zip(inv_heights, atoms.pbc)]
        grids = torch.meshgrid(*[torch.arange(-r, r + 1) for r in reach], indexing="ij")
        shifts = torch.stack([g.reshape(-1) for g in grids], dim=1).double()
    else:
        shifts = torch.zeros(1, 3, dtype=torch.float64)
    out = []
    for shift in shifts:
        d = torch.cdist(pos, pos + shift @ cell)
        i, j = torch.nonzero((d <= cutoff) & (d > 0), as_tuple=True)
        out.append(i.numel())
    return sum(out)


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def bytes_per_structure(atoms, cutoff, copies=100):
    """Mean bytes per structure over distinct rattled copies with EMT-scale random forces (no duplicate rows)."""
    rng = np.random.default_rng(2)
    rows, pickled, edges = [], 0, 0
    for k in range(copies):
        a = atoms.copy()
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        forces = rng.normal(0, 0.5, a.positions.shape)
        s = from_ase(a, f"b{k}", energy=float(rng.normal(-300, 5)), forces=forces)
        g = neighbor_graph(s, cutoff, max_neighbors=30)
        rows.append(to_row(s, g))
        cell = s.cell if s.cell is not None else np.zeros((3, 3))
        data = Data(pos=torch.as_tensor(s.positions, dtype=torch.float32), atomic_numbers=torch.as_tensor(s.atomic_numbers),
                    cell=torch.as_tensor(cell, dtype=torch.float32).unsqueeze(0), edge_index=torch.as_tensor(g.edge_index),
                    cell_offsets=torch.as_tensor(g.shifts, dtype=torch.float32), force=torch.as_tensor(forces, dtype=torch.float32),
                    y=s.energy, natoms=len(a), fixed=torch.zeros(len(a)), tags=torch.zeros(len(a), dtype=torch.long))
        pickled += len(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
        edges += g.num_edges
    buf = io.BytesIO()
    pq.write_table(rows_to_table(rows), buf, compression="zstd")
    return buf.tell() / copies, pickled / copies, edges // copies


def time_case(name, atoms, cutoff, repeats) -> dict:
    """Best-of-`repeats` wall time (ms) of each neighbor-list implementation on one structure."""
    s = from_ase(atoms, name)
    box, periodic = _vesin_box(s.cell, s.pbc)
    nl = vesin.NeighborList(cutoff=cutoff, full_list=True)
    bare = best_time(lambda: nl.compute(points=s.positions, box=box, periodic=periodic, quantities="ijS"), repeats)
    ours = best_time(lambda: neighbor_graph(s, cutoff), repeats)
    ase_ms = best_time(lambda: neighbor_list("ijS", atoms, cutoff), max(1, repeats // 2))
    msp = best_time(lambda: matscipy_list("ijS", atoms, cutoff), repeats) if atoms.pbc.any() else float("nan")
    naive = best_time(lambda: torch_all_pairs(atoms, cutoff), max(1, repeats // 2))
    return {"case": name, "bare_vesin_ms": bare, "atomforge_ms": ours, "ase_ms": ase_ms, "matscipy_ms": msp,
            "torch_all_pairs_ms": naive, "speedup_vs_ase": ase_ms / ours, "speedup_vs_torch": naive / ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", default="bench_out/graphs.json")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = [time_case(name, atoms, cutoff, args.repeats) for name, atoms, cutoff in cases()]
    size = []
    for name, atoms, cutoff in cases()[:3]:
        parquet, pickled, edges = bytes_per_structure(atoms, cutoff)
        size.append({"case": name, "edges": edges, "parquet_zstd_bytes": parquet, "pickled_pyg_bytes": pickled, "ratio": pickled / parquet})
    print(f"{'case':26s} {'vesin ms':>9s} {'ours ms':>9s} {'ASE ms':>9s} {'matscipy':>9s} {'torch ms':>9s} {'x ASE':>7s} {'x torch':>8s}")
    for r in rows:
        print(f"{r['case']:26s} {r['bare_vesin_ms']:9.2f} {r['atomforge_ms']:9.2f} {r['ase_ms']:9.2f} {r['matscipy_ms']:9.2f} {r['torch_all_pairs_ms']:9.2f} "
              f"{r['speedup_vs_ase']:7.1f} {r['speedup_vs_torch']:8.1f}")
    print(f"\n{'case (K=30)':26s} {'edges':>7s} {'parquet B':>10s} {'pickle B':>10s} {'ratio':>6s}")
    for r in size:
        print(f"{r['case']:26s} {r['edges']:7d} {r['parquet_zstd_bytes']:10.0f} {r['pickled_pyg_bytes']:10.0f} {r['ratio']:6.1f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"graph_time": rows, "bytes": size}, indent=2))


if __name__ == "__main__":
    main()
