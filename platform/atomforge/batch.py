"""Batching: structures or shard rows -> `torch_geometric.data.Batch` ready for models; atom-budget batches.

Per graph: `task` (long, the task id), `natoms`, `energy` (float64, eV, NaN when absent),
`has_energy`/`has_forces`/`has_stress` (bool), `cell` (1, 3, 3) Å, `pbc` (1, 3), `stress` (1, 3, 3),
`is_md` (bool, MD frames are never corrupted by denoising objectives), `cutoff`, `max_neighbors`.
Per atom: `z` (long), `pos` (float32 Å), `ref_pos` (the positions the stored graph was built at),
`forces` (float32 eV/Å, zeros when absent), `fixed` (bool), `tags` (long, -1 when absent).
Per edge: `edge_index` (2, E) [src, dst] and `shifts` (E, 3) float (see `atomforge.graph`).
Candidate pairs (`cand_edge_index`, `cand_shifts`) keep the stored cutoff + skin list so
`regraph` can re-filter exactly after positions are corrupted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from atomforge.graph import neighbor_graph, refilter, unsafe_atoms
from atomforge.schema import Structure, from_row, graph_from_row


def structure_data(
    item: Structure | dict[str, Any],
    cutoff: float,
    max_neighbors: int | None = None,
    task: int = 0,
    tie_rule: str = "strict",
) -> Data:
    """One `Data` graph from a Structure (graph built fresh) or a shard row (stored graph re-filtered)."""
    if isinstance(item, dict):
        structure = from_row(item)
        stored = graph_from_row(item) if item.get("edge_src") is not None else None
    else:
        structure, stored = item, None
    if stored is None:
        stored = neighbor_graph(structure, cutoff, max_neighbors, tie_rule=tie_rule)
    n = structure.num_atoms
    pos = torch.as_tensor(structure.positions, dtype=torch.float32)
    cell = torch.as_tensor(structure.cell if structure.cell is not None else np.zeros((3, 3)), dtype=torch.float32)
    cand_index = torch.as_tensor(stored.edge_index, dtype=torch.long)
    cand_shifts = torch.as_tensor(stored.shifts, dtype=torch.float32)
    periodic_cell = cell if structure.pbc.any() else None
    keep = refilter(pos, periodic_cell, cand_index, cand_shifts, cutoff, max_neighbors, tie_rule)
    has_energy = structure.energy is not None
    return Data(
        z=torch.as_tensor(structure.atomic_numbers, dtype=torch.long),
        pos=pos,
        ref_pos=pos.clone(),
        edge_index=cand_index[:, keep],
        shifts=cand_shifts[keep],
        cand_edge_index=cand_index,
        cand_shifts=cand_shifts,
        cell=cell.unsqueeze(0),
        pbc=torch.as_tensor(structure.pbc).unsqueeze(0),
        energy=torch.tensor([structure.energy if has_energy else float("nan")], dtype=torch.float64),
        has_energy=torch.tensor([has_energy]),
        forces=torch.as_tensor(structure.forces if structure.forces is not None else np.zeros((n, 3)), dtype=torch.float32),
        has_forces=torch.tensor([structure.forces is not None]),
        stress=torch.as_tensor(structure.stress if structure.stress is not None else np.zeros((3, 3)), dtype=torch.float32).unsqueeze(0),
        has_stress=torch.tensor([structure.stress is not None]),
        fixed=torch.as_tensor(structure.fixed if structure.fixed is not None else np.zeros(n, dtype=bool)),
        tags=torch.as_tensor(structure.tags if structure.tags is not None else np.full(n, -1), dtype=torch.long),
        is_md=torch.tensor([structure.frame_kind == "md"]),
        task=torch.tensor([task], dtype=torch.long),
        natoms=torch.tensor([n], dtype=torch.long),
        cutoff=torch.tensor([float(cutoff)], dtype=torch.float32),
        max_neighbors=torch.tensor([-1 if max_neighbors is None else max_neighbors], dtype=torch.long),
        system_id=structure.system_id,
        num_nodes=n,
    )


def collate(
    items: Sequence[Structure | dict[str, Any]],
    cutoff: float | Sequence[float] = 6.0,
    max_neighbors: int | None = None,
    tasks: Sequence[int] | None = None,
    tie_rule: str = "strict",
) -> Batch:
    """A PyG `Batch` of structures or shard rows. `cutoff` and `tasks` may be given per item."""
    cutoffs = [cutoff] * len(items) if np.isscalar(cutoff) else list(cutoff)
    tasks = [0] * len(items) if tasks is None else list(tasks)
    if len(cutoffs) != len(items) or len(tasks) != len(items):
        raise ValueError(f"collate: {len(items)} items but {len(cutoffs)} cutoffs and {len(tasks)} tasks")
    graphs = [structure_data(it, c, max_neighbors, t, tie_rule) for it, c, t in zip(items, cutoffs, tasks)]
    return Batch.from_data_list(graphs)


def regraph(batch: Batch, positions: torch.Tensor, skin: float, k_store: int | None, tie_rule: str = "strict") -> tuple[torch.Tensor, torch.Tensor]:
    """Edges for new positions (N, 3): the stored candidates re-filtered, structures rebuilt where unsafe.

    Returns (edge_index (2, E), shifts (E, 3)) consistent with a fresh `neighbor_graph` at each
    structure's cutoff and K. `skin`/`k_store` are the storage parameters (manifest).
    """
    cand, cand_shifts = batch.cand_edge_index, batch.cand_shifts
    graph_of_edge = batch.batch[cand[1]]
    cell_edge = batch.cell[graph_of_edge] * batch.pbc[graph_of_edge].unsqueeze(-1)
    cutoff_edge = batch.cutoff[graph_of_edge].to(torch.float64)
    k = int(batch.max_neighbors.max())
    k = None if k < 0 else k
    unsafe = unsafe_atoms(batch.ref_pos, positions, cell_edge, cand, cand_shifts, cutoff_edge, skin, k_store, k, tie_rule, batch.batch)
    keep = refilter(positions, cell_edge, cand, cand_shifts, cutoff_edge, k, tie_rule)
    edge_index, shifts = cand[:, keep], cand_shifts[keep]
    rebuild = torch.unique(batch.batch[unsafe.to(batch.batch.device)])
    if rebuild.numel() == 0:
        return edge_index, shifts
    return _rebuild_graphs(batch, positions, rebuild, edge_index, shifts, k, tie_rule)


def _rebuild_graphs(batch, positions, graphs, edge_index, shifts, k, tie_rule):
    rebuilt = set(graphs.tolist())
    keep_edges = ~torch.isin(batch.batch[edge_index[1]], graphs)
    parts_index, parts_shift = [edge_index[:, keep_edges]], [shifts[keep_edges]]
    for g in sorted(rebuilt):
        atoms = torch.nonzero(batch.batch == g).squeeze(1)
        offset = int(atoms[0])
        pbc = batch.pbc[g].cpu().numpy()
        fresh = neighbor_graph(
            None, float(batch.cutoff[g]), k, tie_rule=tie_rule,
            positions=positions[atoms].detach().cpu().numpy(), cell=batch.cell[g].cpu().numpy(), pbc=pbc,
        )
        parts_index.append(torch.as_tensor(fresh.edge_index, device=edge_index.device) + offset)
        parts_shift.append(torch.as_tensor(fresh.shifts, dtype=shifts.dtype, device=shifts.device))
    return torch.cat(parts_index, dim=1), torch.cat(parts_shift)


def atom_budget_batches(
    items: Iterable[Any],
    max_atoms: int,
    num_atoms=lambda item: int(item["num_atoms"]),
    max_structures: int | None = None,
) -> Iterator[list[Any]]:
    """Group a stream into batches whose total atom count stays within `max_atoms`.

    A structure larger than the budget on its own forms a batch of one (never dropped).
    `max_structures` caps the count as well.
    """
    if max_atoms <= 0:
        raise ValueError(f"max_atoms must be positive, got {max_atoms}")
    current: list[Any] = []
    total = 0
    for item in items:
        n = num_atoms(item)
        full = max_structures is not None and len(current) >= max_structures
        if current and (total + n > max_atoms or full):
            yield current
            current, total = [], 0
        current.append(item)
        total += n
    if current:
        yield current
