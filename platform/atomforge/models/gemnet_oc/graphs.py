"""GemNet-OC's four graphs and its triplet / quadruplet indices, derived from the edges the model is given.

GemNet-OC (Gasteiger et al. 2022, §3) passes messages over four graphs of the same atoms: the main
(embedding) graph, the quadruplet graph, the atom-edge graph and the atom-atom graph, each with its
own cutoff and per-atom neighbour cap. Here every one of them is a subset of the edge list the
model receives (the stored shard graph re-filtered at the task's cutoff and K, see
`atomforge.graph`): an edge belongs to a sub-graph when its length is below that sub-graph's cutoff
and its distance rank among the edges of its receiving atom is below that sub-graph's cap. No
neighbour search happens here; triplets and quadruplets are enumerated by index arithmetic.

Conventions are `atomforge.graph`'s: an edge (src, dst, shift) has vec = pos[src] + shift @ cell -
pos[dst] (dst -> src image), messages flow src -> dst. Two edges into the same atom reach the same
atom image when their src and shift agree, which is how "b and c are distinct" is decided.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from atomforge.graph import TIE_DECIMALS
from atomforge.models.radial import safe_norm


@dataclass
class Edges:
    """Directed edges sorted by (dst, distance). src, dst (E,) long; vec (E, 3) Å dst -> src image;
    dist (E,) Å; shift (E, 3) long image shift of src; slot (E,) rank of the edge among its dst's edges."""

    src: torch.Tensor
    dst: torch.Tensor
    vec: torch.Tensor
    dist: torch.Tensor
    shift: torch.Tensor
    slot: torch.Tensor

    def __len__(self) -> int:
        return int(self.src.shape[0])

    @property
    def unit(self) -> torch.Tensor:
        """(E, 3) unit vectors dst -> src."""
        return self.vec / self.dist.unsqueeze(-1)

    def subset(self, index: torch.Tensor) -> Edges:
        """The edges at `index` (ascending), slots kept: a cutoff-and-cap subset keeps each atom's nearest."""
        return Edges(self.src[index], self.dst[index], self.vec[index], self.dist[index], self.shift[index], self.slot[index])


@dataclass
class Triplets:
    """Pairs of edges meeting at an atom: `into` (T,) input edge, `out` (T,) output edge (ascending),
    `slot` (T,) rank of the pair among the pairs of its output edge (for padded aggregation)."""

    into: torch.Tensor
    out: torch.Tensor
    slot: torch.Tensor


@dataclass
class Quadruplets:
    """d -> b -> a <- c: `inner` (Q,) index into the (d->b, b->a) triplets, `outer` (Q,) index into the
    (b->a, c->a) triplets, `out` (Q,) main edge c->a (ascending), `slot` (Q,) rank within `out`."""

    inner: torch.Tensor
    outer: torch.Tensor
    out: torch.Tensor
    slot: torch.Tensor


def rank_within(group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Position of each element inside its group; `group` (M,) sorted ascending -> (M,) long."""
    counts = torch.bincount(group, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(group.shape[0], device=group.device) - starts[group]


def sorted_edges(src, dst, vec, shift, num_atoms: int) -> Edges:
    """Edges ordered by (dst, distance, given order): the platform's strict nearest-K order."""
    dist = safe_norm(vec)
    rounded = torch.round(dist.detach().double(), decimals=TIE_DECIMALS)
    order = torch.sort(rounded, stable=True).indices
    order = order[torch.sort(dst[order], stable=True).indices]
    dst = dst[order]
    return Edges(src[order], dst, vec[order], dist[order], shift[order], rank_within(dst, num_atoms))


def within(edges: Edges, cutoff: float, max_neighbors: int) -> Edges:
    """The sub-graph of edges shorter than `cutoff` Å among each atom's `max_neighbors` nearest."""
    keep = (edges.dist.detach() < cutoff) & (edges.slot < max_neighbors)
    return edges.subset(torch.nonzero(keep).squeeze(1))


def _canonical(edges: Edges) -> torch.Tensor:
    """(E,) bool: the one direction of each pair kept when symmetrising (src < dst, or the positive image)."""
    s = edges.shift
    positive = (s[:, 0] > 0) | ((s[:, 0] == 0) & (s[:, 1] > 0)) | ((s[:, 0] == 0) & (s[:, 1] == 0) & (s[:, 2] > 0))
    return (edges.src < edges.dst) | ((edges.src == edges.dst) & positive)


def symmetrized(edges: Edges, num_atoms: int) -> tuple[Edges, torch.Tensor]:
    """Both directions of every pair whose canonical direction is in `edges`, and `swap` (E,): the reverse edge.

    A per-atom cap keeps j in i's list without i in j's; GemNet-OC's symmetric message passing needs
    each edge's reverse, so (as in the paper's code) the canonical direction decides for the pair.
    """
    half = edges.subset(torch.nonzero(_canonical(edges)).squeeze(1))
    m = len(half)
    src, dst = torch.cat([half.src, half.dst]), torch.cat([half.dst, half.src])
    vec, shift = torch.cat([half.vec, -half.vec]), torch.cat([half.shift, -half.shift])
    dist = torch.cat([half.dist, half.dist])
    rounded = torch.round(dist.detach().double(), decimals=TIE_DECIMALS)
    order = torch.sort(rounded, stable=True).indices
    order = order[torch.sort(dst[order], stable=True).indices]
    position = torch.empty_like(order)
    position[order] = torch.arange(2 * m, device=order.device)
    reverse = torch.cat([torch.arange(m, 2 * m), torch.arange(m)]).to(order.device)
    swap = position[reverse[order]]
    dst = dst[order]
    return Edges(src[order], dst, vec[order], dist[order], shift[order], rank_within(dst, num_atoms)), swap


def _members(anchor: torch.Tensor, group: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (i, j) with group[j] == anchor[i], ordered by i. anchor (M,); group (G',) sorted ascending."""
    counts = torch.bincount(group, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    per = counts[anchor]
    i = torch.repeat_interleave(torch.arange(anchor.shape[0], device=anchor.device), per)
    first = torch.repeat_interleave(torch.cumsum(per, 0) - per, per)
    j = starts[anchor][i] + torch.arange(i.shape[0], device=anchor.device) - first
    return i, j


def triplets(into: Edges, out: Edges, num_atoms: int) -> Triplets:
    """b -> a in `into` with c -> a in `out`, b and c distinct atom images (b = c across cells is allowed)."""
    o, i = _members(out.dst, into.dst, num_atoms)
    distinct = (into.src[i] != out.src[o]) | (into.shift[i] != out.shift[o]).any(dim=-1)
    o, i = o[distinct], i[distinct]
    return Triplets(into=i, out=o, slot=rank_within(o, len(out)))


def source_triplets(into: Edges, out: Edges, num_atoms: int) -> Triplets:
    """d -> b in `into` with b -> a in `out` (into's dst = out's src), d a different image than a."""
    o, i = _members(out.src, into.dst, num_atoms)
    back = (into.src[i] == out.dst[o]) & (into.shift[i] == -out.shift[o]).all(dim=-1)
    o, i = o[~back], i[~back]
    return Triplets(into=i, out=o, slot=rank_within(o, len(out)))


def quadruplets(main: Edges, quad: Edges, inner: Triplets, outer: Triplets) -> Quadruplets:
    """d -> b -> a <- c from inner (d->b main, b->a quad) and outer (b->a quad, c->a main) triplets, c != d.

    c and d are the same image when src(c->a) = src(d->b) and shift(c->a) = shift(d->b) + shift(b->a).
    """
    t_outer, t_inner = _members(outer.into, inner.out, len(quad))
    c_edge, d_edge, ba = outer.out[t_outer], inner.into[t_inner], outer.into[t_outer]
    same = (main.src[c_edge] == main.src[d_edge]) & (main.shift[c_edge] == main.shift[d_edge] + quad.shift[ba]).all(dim=-1)
    t_outer, t_inner = t_outer[~same], t_inner[~same]
    out = outer.out[t_outer]
    return Quadruplets(inner=t_inner, outer=t_outer, out=out, slot=rank_within(out, len(main)))


def cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Cosine of the angle between unit vectors u, v (M, 3), clamped to [-1, 1]."""
    return (u * v).sum(dim=-1).clamp(-1.0, 1.0)


def plane_normal(u: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """u × axis (M, 3): the normal of the plane of a bond u and the dihedral axis (per triplet, then gathered)."""
    return torch.linalg.cross(u, axis)


def dihedral_cosine(n1: torch.Tensor, n2: torch.Tensor) -> torch.Tensor:
    """cos of a dihedral (Q,) from the normals (Q, 3) of its two planes (`plane_normal` around one axis).

    Undefined where a plane degenerates (three collinear atoms); there the tiny floor gives 0 with a
    finite (large) gradient, as GemNet-OC's clamped angle does.
    """
    return (n1 * n2).sum(-1) / torch.sqrt((n1 * n1).sum(-1) * (n2 * n2).sum(-1) + 1e-12)


@dataclass
class GemNetGraphs:
    """Everything GemNet-OC indexes with: the four sub-graphs, the main graph's reverse edges `swap`
    (E_main,), and the triplets / quadruplets of each message type."""

    main: Edges
    swap: torch.Tensor
    quad: Edges
    atom_edge: Edges
    atom: Edges
    e2e: Triplets  # b->a main into c->a main
    quad_inner: Triplets  # d->b main into b->a quad
    quad_outer: Triplets  # b->a quad into c->a main
    quads: Quadruplets
    a2e: Triplets  # b->a atom-edge into c->a main
    e2a: Triplets  # b->a main into c->a atom-edge


def gemnet_graphs(edge_index, edge_vec, shifts, num_atoms: int, config) -> GemNetGraphs:
    """Sub-graphs and indices from the given edges: edge_index (2, E) [src, dst], edge_vec (E, 3) Å,
    shifts (E, 3) integer image shifts or None (then no edge may join an atom to its own image)."""
    src, dst = edge_index
    if shifts is None:
        if bool((src == dst).any()):
            raise ValueError("GemNet-OC: edges join atoms to their own periodic images but no shifts were given")
        shifts = torch.zeros(src.shape[0], 3, dtype=torch.long, device=src.device)
    shifts = torch.round(shifts).long() if shifts.is_floating_point() else shifts.long()
    given = sorted_edges(src, dst, edge_vec, shifts, num_atoms)
    atom = within(given, config.cutoff, config.max_neighbors)
    main, swap = symmetrized(within(given, config.cutoff_main, config.max_neighbors_main), num_atoms)
    quad = within(given, config.cutoff_quad, config.max_neighbors_quad)
    atom_edge = within(given, config.cutoff_atom_edge, config.max_neighbors_atom_edge)
    inner, outer = source_triplets(main, quad, num_atoms), triplets(quad, main, num_atoms)
    return GemNetGraphs(
        main=main, swap=swap, quad=quad, atom_edge=atom_edge, atom=atom,
        e2e=triplets(main, main, num_atoms), quad_inner=inner, quad_outer=outer,
        quads=quadruplets(main, quad, inner, outer),
        a2e=triplets(atom_edge, main, num_atoms), e2a=triplets(main, atom_edge, num_atoms),
    )
