"""Neighbor graphs: radius graphs with periodic images (vesin), nearest-K truncation, Verlet re-filtering.

Conventions, stated once for the whole platform:
- An edge is a pair (src, dst, shift): atom `src` seen from atom `dst` through the periodic image
  `shift` (integer multiples of the cell vectors). Its vector points from dst to src:
      vector = pos[src] + shift @ cell - pos[dst]          # (3,) Å
  Messages flow src -> dst; "the neighbors of atom i" are the edges with dst == i.
- Both directions are stored (a full list): (j, i, S) and (i, j, -S).
- Edges are ordered by dst, then by distance, then by src, then by the shift (lexicographic).
  Two distances tie when they agree after rounding to 1e-8 Å (TIE_DECIMALS): symmetry-equivalent
  neighbors computed through different images differ in the last bits of a float64. Positions
  are stored as float32, so symmetry that float32 rounding breaks (~1e-7 Å) is not a tie.
- Nearest-K truncation is per receiving atom (dst). Tie rules, by name:
    "strict" (JMP): exactly the first K edges of that order; ties at the K-th distance are broken
        by lower src index, then lexicographically smaller shift.
    "tolerant" (fairchem-like): every edge with d <= d_K + 0.01 Å, so a tie-heavy shell is kept
        whole and an atom can exceed K.
- Distances are always recomputed here in float64 from the stored float32 positions
  (`edge_lengths`, one formula for numpy and torch), so a fresh build and a re-filter of stored
  pairs order exact ties identically.
- One search per structure: `search_graph` also returns the closest pair it saw (periodic images
  included), so validation's minimum-distance rule needs no second search.

Storage uses `cutoff + skin` and up to `K_store >= K` neighbors (strict). At load time
`refilter` recomputes distances from new positions (after a corruption, say), keeps the pairs
within `cutoff` and the K nearest. It equals a fresh build when no atom moved more than skin/2 and
no truncated atom could have lost a neighbor to the truncation; `needs_rebuild` detects both.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import vesin

TIE_RULES = ("strict", "tolerant")
TOLERANT_TIE = 0.01  # Å, the tolerant rule's tie window
TIE_DECIMALS = 8  # distances are compared after rounding to 1e-8 Å


class NeighborGraph(NamedTuple):
    """edge_index (2, E) int64 rows [src, dst]; shifts (E, 3) int64 image shifts of src."""

    edge_index: np.ndarray
    shifts: np.ndarray

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])


def _vesin_box(cell: np.ndarray | None, pbc: np.ndarray) -> tuple[np.ndarray, list[bool]]:
    pbc = np.asarray(pbc, dtype=bool)
    if not pbc.any():
        return np.zeros((3, 3)), [False, False, False]
    box = np.array(cell, dtype=np.float64).reshape(3, 3)
    if abs(np.linalg.det(box)) < 1e-8:
        # Non-periodic axes never get a shift, so their vectors only have to keep the box invertible:
        # fill them with unit vectors orthogonal to the periodic ones (slabs with c = 0, wires).
        basis, _ = np.linalg.qr(box[pbc].T, mode="complete")  # (3, 3); first columns span the periodic rows
        box[~pbc] = basis[:, int(pbc.sum()):].T
    return box, pbc.tolist()


def edge_vectors(positions, cell, edge_index, shifts):
    """vector (E, 3) Å = pos[src] + shift @ cell - pos[dst], for numpy or torch inputs.

    `cell` is None (no periodicity), one (3, 3) cell, or one cell per edge (E, 3, 3).
    """
    src, dst = edge_index[0], edge_index[1]
    if cell is None:
        return positions[src] - positions[dst]
    # shift @ cell as three explicit multiply-adds (no BLAS, no FMA): one cell and a per-edge cell
    # then round identically, so a batch re-filters exactly as each of its structures alone does.
    rows = (cell[0], cell[1], cell[2]) if cell.ndim == 2 else (cell[:, 0], cell[:, 1], cell[:, 2])
    offset = shifts[:, 0:1] * rows[0] + shifts[:, 1:2] * rows[1] + shifts[:, 2:3] * rows[2]
    return positions[src] + offset - positions[dst]


def edge_lengths(positions, cell, edge_index, shifts):
    """|vector| (E,) Å of `edge_vectors`, as sqrt(x² + y² + z²) written out for numpy and torch alike.

    Every builder and re-filter computes distances with this one formula in float64, so a structure's
    fresh build, its re-filter alone and its re-filter inside a batch compare and order identical
    numbers (a library norm may sum in another order or scale, and move a tie or a cutoff by an ulp).
    """
    v = edge_vectors(positions, cell, edge_index, shifts)
    squared = v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1] + v[:, 2] * v[:, 2]
    return np.sqrt(squared) if isinstance(squared, np.ndarray) else torch.sqrt(squared)


class GraphSearch(NamedTuple):
    """One neighbor search's results: the stored graph and the closest pair the search saw.

    `closest` is (src, dst, distance Å) of the nearest pair within the search radius (periodic
    images of one atom included), taken before nearest-K truncation, or None when no pair is
    within the radius. Validation reads it instead of searching again (`schema.MIN_DISTANCE`).
    """

    graph: NeighborGraph
    closest: tuple[int, int, float] | None


def _radius_pairs(positions: np.ndarray, cell, pbc, cutoff: float, device=None):
    """All pairs within `cutoff`: src, dst, shift (int64), distance (float64, `edge_lengths`).

    The search runs in vesin on the CPU, or in vesin-torch on `device` (a torch device: its CUDA
    kernel on a GPU); either way the candidates are measured, filtered and ordered here, identically."""
    box, periodic = _vesin_box(cell, pbc)
    radius = float(cutoff) * (1 + 1e-9) + 1e-9
    if device is None:
        i, j, shifts = vesin.NeighborList(cutoff=radius, full_list=True).compute(
            points=positions, box=box, periodic=periodic, quantities="ijS")
    else:
        i, j, shifts = _torch_search(positions, box, periodic, radius, device)
    src, dst = j.astype(np.int64), i.astype(np.int64)
    shifts = shifts.astype(np.int64).reshape(-1, 3)
    cell64 = None if not np.asarray(pbc).any() else np.asarray(cell, dtype=np.float64)
    distance = edge_lengths(positions, cell64, (src, dst), shifts.astype(np.float64))
    keep = distance <= cutoff
    return src[keep], dst[keep], shifts[keep], distance[keep]


def _torch_search(positions: np.ndarray, box: np.ndarray, periodic: list[bool], radius: float, device):
    """vesin-torch's full neighbor list on `device`, copied back as numpy (i, j, S)."""
    try:
        import vesin_torch
    except ImportError:
        raise ImportError("a neighbor search on a device needs vesin-torch: pip install 'atomforge[gpu]'") from None
    points = torch.as_tensor(positions, dtype=torch.float64, device=device)
    calculator = vesin_torch.NeighborList(cutoff=radius, full_list=True)
    i, j, shifts = calculator.compute(points=points, box=torch.as_tensor(box, dtype=torch.float64, device=device),
                                      periodic=torch.tensor(periodic, device=device), quantities="ijS")
    return i.cpu().numpy(), j.cpu().numpy(), shifts.cpu().numpy()


def _order(src, dst, shifts, distance) -> np.ndarray:
    """Permutation sorting edges by (dst, distance rounded to TIE_DECIMALS, src, shift)."""
    # The rounded distance as an integer count of 1e-8 Å orders exactly as np.round(d, TIE_DECIMALS).
    ticks = np.rint(distance * 10.0**TIE_DECIMALS).astype(np.int64)
    if len(ticks) == 0:
        return np.zeros(0, dtype=np.int64)
    low = int(shifts.min())  # one offset for all axes (per-axis reductions of (E, 3) are slow)
    shift_bits = int(max(int(shifts.max()) - low, 1)).bit_length()
    atom_bits = int(max(dst.max(), src.max(), 1)).bit_length()
    tick_bits = int(max(ticks.max(), 1)).bit_length()
    packed = shifts - low  # lexicographic order of (s0, s1, s2) kept by packing with a common offset
    shift_key = (packed[:, 0] << (2 * shift_bits)) | (packed[:, 1] << shift_bits) | packed[:, 2]
    if 2 * atom_bits + tick_bits + 3 * shift_bits <= 63:
        # All four keys in one int64 (a 65-atom slab at 12 Å needs ~54 bits): one argsort, not a
        # lexsort. Keys are unique ((src, dst, shift) is), so the fast unstable sort is deterministic.
        key = (((dst << tick_bits | ticks) << atom_bits | src) << (3 * shift_bits)) | shift_key
        return np.argsort(key)
    return np.lexsort((shift_key, src, ticks, dst))


def _rank_in_group(dst_sorted: np.ndarray, num_atoms: int) -> np.ndarray:
    counts = np.bincount(dst_sorted, minlength=num_atoms)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.arange(len(dst_sorted)) - starts[dst_sorted]


def _truncate(dst, distance, num_atoms: int, max_neighbors: int, tie_rule: str) -> np.ndarray:
    """Boolean keep-mask for edges already sorted by (dst, distance, src, shift)."""
    rank = _rank_in_group(dst, num_atoms)
    if tie_rule == "strict":
        return rank < max_neighbors
    kth = np.full(num_atoms, np.inf)
    at_k = rank == max_neighbors - 1
    kth[dst[at_k]] = distance[at_k]
    return distance <= kth[dst] + TOLERANT_TIE


def search_graph(positions, cell, pbc, radius: float, max_neighbors: int | None = None,
                 tie_rule: str = "strict", device=None) -> GraphSearch:
    """One vesin search within `radius` Å: the sorted, truncated graph and the closest pair.

    Args:
        positions (N, 3) Å (rounded to float32 first, as shards store them); cell (3, 3) Å or None;
        pbc (3,) bool; radius = cutoff + skin; max_neighbors = K (None = keep all); tie_rule as
        the module says; device: None searches with vesin on the CPU, a torch device ("cuda")
        with vesin-torch there (`atomforge[gpu]`): same pairs, same order, only the search moves.
    Returns:
        GraphSearch(graph, closest); the graph equals `neighbor_graph` with the same arguments.
    """
    _check_tie_rule(tie_rule)
    positions = np.asarray(positions, dtype=np.float32).astype(np.float64).reshape(-1, 3)
    pbc = np.zeros(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool)
    num_atoms = len(positions)
    src, dst, shifts, distance = _radius_pairs(positions, cell, pbc, radius, device)
    closest = None
    if len(distance):
        k = int(np.argmin(distance))
        closest = (int(src[k]), int(dst[k]), float(distance[k]))
    within = distance <= radius  # vesin's radius is 1e-9 wider, so that no pair at the cutoff is lost
    if not within.all():
        src, dst, shifts, distance = src[within], dst[within], shifts[within], distance[within]
    # One sort of every pair, then a rank cut: (E, 3) shifts are gathered once, at the end.
    order = _order(src, dst, shifts, distance)
    if max_neighbors is not None:
        order = order[_truncate(dst[order], distance[order], num_atoms, max_neighbors, tie_rule)]
    src, dst, shifts = src[order], dst[order], shifts[order]
    return GraphSearch(NeighborGraph(edge_index=np.stack([src, dst]), shifts=shifts), closest)


def _check_tie_rule(tie_rule: str) -> None:
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {TIE_RULES}, got {tie_rule!r}")


def neighbor_graph(
    structure=None,
    cutoff: float = 6.0,
    max_neighbors: int | None = None,
    skin: float = 0.0,
    tie_rule: str = "strict",
    *,
    positions=None,
    cell=None,
    pbc=None,
    device=None,
) -> NeighborGraph:
    """Radius graph of a `Structure` (or of positions/cell/pbc) within `cutoff + skin` Å.

    Args:
        structure: an `atomforge.Structure`; or pass `positions (N, 3) Å`, `cell (3, 3) Å`, `pbc (3,)`.
        cutoff: radius in Å; may exceed the cell (all images within reach are listed).
        max_neighbors: keep at most K per receiving atom (see the module's tie rules); None = all.
        skin: extra radius for storage (Verlet skin); re-filter with `refilter` at load time.
        device: where the candidate search runs (`search_graph`).
    Returns:
        NeighborGraph(edge_index (2, E) [src, dst], shifts (E, 3) int), sorted as the module says.
    """
    if structure is not None:
        positions, cell, pbc = structure.positions, structure.cell, structure.pbc
    return search_graph(positions, cell, pbc, cutoff + skin, max_neighbors, tie_rule, device).graph


def _stored_distance(positions: torch.Tensor, cell, edge_index, shifts) -> torch.Tensor:
    pos64 = positions.detach().to(torch.float64)
    cell64 = None if cell is None else cell.detach().to(torch.float64)
    if cell64 is not None and cell64.ndim == 2:
        cell64 = cell64.reshape(3, 3)
    return edge_lengths(pos64, cell64, edge_index, shifts.to(torch.float64))


def refilter(
    positions: torch.Tensor,
    cell: torch.Tensor | None,
    edge_index: torch.Tensor,
    shifts: torch.Tensor,
    cutoff: float | torch.Tensor,
    max_neighbors: int | None = None,
    tie_rule: str = "strict",
) -> torch.Tensor:
    """Indices of stored edges that a fresh build at these positions would keep, in build order.

    Works on one structure or on a whole batch (graphs never share atoms).
    Args:
        positions (N, 3) Å; cell None, (3, 3) or per edge (E, 3, 3) Å; edge_index (2, E) [src, dst]
        and shifts (E, 3) of a stored graph (built with cutoff + skin, K_store); cutoff Å, a float
        or per edge (E,); K for this use.
    Returns:
        long tensor of edge indices, ordered by (dst, distance, stored order).
    """
    _check_tie_rule(tie_rule)
    distance = _stored_distance(positions, cell, edge_index, shifts)
    within = torch.nonzero(distance <= cutoff).squeeze(1)
    rounded = torch.round(distance[within], decimals=TIE_DECIMALS)
    by_distance = within[torch.sort(rounded, stable=True).indices]
    order = by_distance[torch.sort(edge_index[1, by_distance], stable=True).indices]
    if max_neighbors is None:
        return order
    dst = edge_index[1, order].cpu().numpy()
    keep = _truncate(dst, distance[order].cpu().numpy(), int(positions.shape[0]), max_neighbors, tie_rule)
    return order[torch.from_numpy(keep).to(order.device)]


def unsafe_atoms(
    ref_positions: torch.Tensor,
    positions: torch.Tensor,
    cell: torch.Tensor | None,
    edge_index: torch.Tensor,
    shifts: torch.Tensor,
    cutoff: float | torch.Tensor,
    skin: float,
    k_store: int | None,
    max_neighbors: int | None = None,
    tie_rule: str = "strict",
    atom_group: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-atom bool (N,): True where re-filtering the stored pairs might differ from a fresh build.

    Two ways it can, judged per structure (`atom_group` (N,) maps atoms to structures in a batch):
    (1) an atom of the structure moved more than skin/2 from `ref_positions` (where the graph was
    built), so a pair beyond cutoff + skin might now be inside the cutoff; (2) an atom whose stored
    list was cut at K_store has pairs dropped at build time (stored distance >= r_last, its farthest
    kept), and with every atom moved by at most max_disp they could now be as near as
    r_last - 2·max_disp, inside its cutoff or its K-th distance.
    """
    if k_store is not None and (max_neighbors is None or max_neighbors > k_store):
        raise ValueError(f"max_neighbors={max_neighbors} needs a stored graph with K_store >= K, got K_store={k_store}")
    num_atoms = int(positions.shape[0])
    group = torch.zeros(num_atoms, dtype=torch.long) if atom_group is None else atom_group.cpu()
    num_groups = int(group.max()) + 1 if num_atoms else 0
    disp = torch.linalg.vector_norm((positions.detach() - ref_positions).to(torch.float64), dim=1).cpu()
    max_disp = torch.zeros(num_groups, dtype=torch.float64).scatter_reduce(0, group, disp, "amax")[group]
    unsafe = max_disp > skin / 2
    if k_store is None or edge_index.shape[1] == 0:
        return unsafe & (max_disp > 0)
    dst = edge_index[1].cpu()
    truncated = torch.bincount(dst, minlength=num_atoms) >= k_store
    if not bool(truncated.any()):
        return unsafe & (max_disp > 0)
    old = _stored_distance(ref_positions, cell, edge_index, shifts).cpu()
    r_last = torch.zeros(num_atoms, dtype=torch.float64).scatter_reduce(0, dst, old, "amax")
    cut = torch.as_tensor(cutoff, dtype=torch.float64).cpu()
    if cut.ndim == 0:
        bound = torch.full((num_atoms,), float(cut), dtype=torch.float64)
    else:
        bound = torch.full((num_atoms,), float("inf"), dtype=torch.float64).scatter_reduce(0, dst, cut, "amin")
    if max_neighbors is not None:
        kept = refilter(positions, cell, edge_index, shifts, cutoff, max_neighbors, "strict").cpu()
        cell_kept = cell[kept] if cell is not None and cell.ndim == 3 else cell
        new = _stored_distance(positions, cell_kept, edge_index[:, kept], shifts[kept]).cpu()
        kept_dst = dst[kept]
        full = torch.bincount(kept_dst, minlength=num_atoms) >= max_neighbors
        kth = torch.zeros(num_atoms, dtype=torch.float64).scatter_reduce(0, kept_dst, new, "amax")
        tie = TOLERANT_TIE if tie_rule == "tolerant" else 0.0
        bound = torch.where(full, torch.minimum(bound, kth + tie), bound)
    unsafe |= truncated & (r_last - 2 * max_disp <= bound)
    return unsafe & (max_disp > 0)


def needs_rebuild(ref_positions, positions, cell, edge_index, shifts, cutoff, skin, k_store, max_neighbors=None, tie_rule="strict") -> bool:
    """True when re-filtering one structure's stored pairs at `positions` might differ from a fresh build."""
    return bool(
        unsafe_atoms(ref_positions, positions, cell, edge_index, shifts, cutoff, skin, k_store, max_neighbors, tie_rule).any()
    )


def closest_pair(positions: np.ndarray, cell, pbc, below: float) -> tuple[int, int, float] | None:
    """The closest pair of atoms (including periodic images of one atom) nearer than `below` Å, or None."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    pbc = np.asarray(pbc, dtype=bool)
    box, periodic = _vesin_box(cell, pbc)
    # vesin's cell list has ~(box / cutoff)^3 cells: a 0.1 Å search in a 25 Å slab cell took 1.5 s;
    # searching 2 Å (a few pairs per atom) and filtering is ~1000x faster with the same answer.
    calculator = vesin.NeighborList(cutoff=max(float(below), 2.0), full_list=False)
    i, j, d = calculator.compute(points=positions, box=box, periodic=periodic, quantities="ijd")
    if len(d) == 0:
        return None
    k = int(np.argmin(d))
    if d[k] >= below:
        return None
    return int(i[k]), int(j[k]), float(d[k])
