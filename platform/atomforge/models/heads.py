"""Output heads on node features: per-atom energies, equivariant per-atom vectors, a pooled graph
embedding, and per-task heads evaluated together (`TaskHeads`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from atomforge.models.radial import safe_norm


class GatedEquivariantBlock(nn.Module):
    """Schütt et al. 2021: vectors gated by an MLP of (scalars, vector norms); equivariant by construction.

    (s (N, S_in), v (N, 3, V_in)) -> (s (N, S_out), v (N, 3, V_out)).
    """

    def __init__(self, scalars_in: int, vectors_in: int, scalars_out: int, vectors_out: int):
        super().__init__()
        self.scalars_out = scalars_out
        self.w_out = nn.Linear(vectors_in, vectors_out, bias=False)
        self.w_norm = nn.Linear(vectors_in, vectors_in, bias=False)
        hidden = max(scalars_in, 8)
        self.mlp = nn.Sequential(nn.Linear(scalars_in + vectors_in, hidden), nn.SiLU(), nn.Linear(hidden, scalars_out + vectors_out))

    def forward(self, s: torch.Tensor, v: torch.Tensor):
        x = self.mlp(torch.cat([s, safe_norm(self.w_norm(v), dim=1)], dim=-1))
        s_out, gate = x[:, : self.scalars_out], x[:, self.scalars_out :]
        return s_out, self.w_out(v) * gate.unsqueeze(1)


class VectorHead(nn.Module):
    """One equivariant vector per atom (N, 3) from node features: two gated equivariant blocks."""

    def __init__(self, num_scalars: int, num_vectors: int):
        super().__init__()
        hidden = max(num_scalars // 2, 8)
        self.block1 = GatedEquivariantBlock(num_scalars, num_vectors, hidden, hidden)
        self.block2 = GatedEquivariantBlock(hidden, hidden, 1, 1)
        self.act = nn.SiLU()

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s, v = self.block1(s, v)
        _, v = self.block2(self.act(s), v)
        return v.squeeze(-1)


class EnergyHead(nn.Module):
    """Per-atom scalar (N,) from node scalars (N, F); the model sums it per graph."""

    def __init__(self, num_scalars: int):
        super().__init__()
        hidden = max(num_scalars // 2, 8)
        self.mlp = nn.Sequential(nn.Linear(num_scalars, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.mlp(s).squeeze(-1)


class GraphEmbeddingHead(nn.Module):
    """SCD's graph embedding: per-node MLP + LayerNorm, sum-pool, LayerNorm, MLP. s (N, F) -> (G, C).

    The LayerNorm after pooling (as SCD's released projection head) keeps the condition's scale
    independent of the atom count: a sum of N normalised node vectors grows like N."""

    def __init__(self, num_scalars: int, dim: int):
        super().__init__()
        self.node = nn.Sequential(nn.Linear(num_scalars, dim), nn.SiLU(), nn.Linear(dim, dim), nn.LayerNorm(dim))
        self.pooled_norm = nn.LayerNorm(dim)
        self.graph = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, s: torch.Tensor, graph: torch.Tensor, num_graphs: int) -> torch.Tensor:
        h = self.node(s)
        pooled = h.new_zeros(num_graphs, h.shape[1]).index_add_(0, graph, h)
        return self.graph(self.pooled_norm(pooled))


class TaskHeads(nn.ModuleDict):
    """One head per task, all of one architecture, evaluated as one batched module.

    Each head keeps its parameters under its task's name (`heads["oc20"]`, state-dict keys
    `<name>.<task>.<parameter>`), so checkpoints, fine-tuning's kept heads and layer-wise learning
    rates address a task's head by name. `forward` stacks the heads' parameters along a leading
    task dimension (T, ...), evaluates every head on every atom with `torch.func.vmap` (one batched
    matmul per layer, whatever T) and keeps each atom's own task's row with one gather: T times the
    heads' arithmetic, no host synchronisation and no per-task kernels (a loop over the tasks
    present needs their ids on the host, a device sync every step on a GPU).
    """

    def forward(self, atom_task: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        """atom_task (N,) long, index into the heads in insertion order; features: the heads'
        arguments, each (N, ...). Returns (N, ...): each atom's output from its task's head."""
        heads = list(self.values())
        names = [name for name, _ in heads[0].named_parameters()]
        params = [dict(head.named_parameters()) for head in heads]
        stacked = {name: torch.stack([p[name] for p in params]) for name in names}  # (T, ...) each
        per_task = vmap(lambda p: functional_call(heads[0], p, features))(stacked)  # (T, N, ...)
        index = atom_task.view(1, -1, *(1,) * (per_task.dim() - 2)).expand(1, *per_task.shape[1:])
        return per_task.gather(0, index).squeeze(0)
