"""ModelInputs: everything `AtomisticModel` reads of one batch, clean or as an objective corrupted it.

A batch (`atomforge.batch`) holds labels and bookkeeping besides the structures; the model reads
only the fields below. The clean view is `ModelInputs.clean(batch)` (what `model(batch)` uses); an
objective's corruption returns another record with positions, edges, atom types or conditioning
replaced (`objectives.corruption`), so a forward pass says in one value what it was given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)  # tensors: no elementwise ==, hashed by identity
class ModelInputs:
    """The model's view of N atoms, E edges and G graphs.

    positions (N, 3) Å; edge_index (2, E) long [src, dst]; shifts (E, 3) periodic image of each
    edge's source in cell vectors (vector = pos[src] + shifts @ cell - pos[dst]); z (N,) long atomic
    numbers (`MASK_Z` for masked atoms); cell (G, 3, 3) Å, rows are cell vectors (zeros when not
    periodic); pbc (G, 3) bool; graph (N,) long, the graph of each atom; task (G,) long, index into
    `model.tasks`; num_graphs G. Optional conditioning: vector_input (N, 3) eV/Å, DeNS's encoded
    forces (zero rows encode nothing); condition (G, C), SCD's graph condition (None: the learned
    null token); drop_condition (G,) bool, graphs whose condition is replaced by the null token.
    """

    positions: torch.Tensor
    edge_index: torch.Tensor
    shifts: torch.Tensor
    z: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    graph: torch.Tensor
    task: torch.Tensor
    num_graphs: int
    vector_input: torch.Tensor | None = None
    condition: torch.Tensor | None = None
    drop_condition: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # Shapes live on the host: checking them costs no device synchronisation.
        num_atoms, num_edges = self.positions.shape[0], self.edge_index.shape[-1]
        expected = {"positions": (self.positions, (num_atoms, 3)), "edge_index": (self.edge_index, (2, num_edges)),
                    "shifts": (self.shifts, (num_edges, 3)), "z": (self.z, (num_atoms,)),
                    "graph": (self.graph, (num_atoms,)), "task": (self.task, (self.num_graphs,)),
                    "cell": (self.cell, (self.num_graphs, 3, 3)),
                    "vector_input": (self.vector_input, (num_atoms, 3)),
                    "drop_condition": (self.drop_condition, (self.num_graphs,))}
        for name, (value, shape) in expected.items():
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"ModelInputs.{name}: shape {tuple(value.shape)}, expected {shape} "
                                 f"({num_atoms} atoms, {num_edges} edges, {self.num_graphs} graphs)")
        if self.condition is not None and self.condition.shape[0] != self.num_graphs:
            raise ValueError(f"ModelInputs.condition: {self.condition.shape[0]} rows for {self.num_graphs} graphs")

    @classmethod
    def clean(cls, batch) -> ModelInputs:
        """The batch's own structures, graph and task ids, without conditioning."""
        return cls(positions=batch.pos, edge_index=batch.edge_index, shifts=batch.shifts, z=batch.z,
                   cell=batch.cell, pbc=batch.pbc, graph=batch.batch, task=batch.task,
                   num_graphs=int(batch.num_graphs))

    def replace(self, **changes) -> ModelInputs:
        """A copy with the named fields replaced (checked like a new record)."""
        return dataclasses.replace(self, **changes)
