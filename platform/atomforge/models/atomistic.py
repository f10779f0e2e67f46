"""AtomisticModel: a backbone with per-task energy/force heads, named vector heads and physical outputs."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from atomforge.datasets import task_spec
from atomforge.models.backbone import NUM_ATOM_TYPES, Backbone, BackboneInputs, Capability, NodeFeatures
from atomforge.models.heads import EnergyHead, GraphEmbeddingHead, TaskHeads, VectorHead
from atomforge.models.inputs import ModelInputs
from atomforge.tasks import TaskSpec

FORCE_MODES = ("direct", "gradient")


@dataclass
class ModelOutput:
    """Outputs in physical units; None where not requested.

    energy (G,) float64 eV (per-task head, de-normalised, plus the mean and the linear reference);
    forces (N, 3) eV/Å, direct head or -∂E/∂x (see `forces_mode`); stress (G, 3, 3) eV/Å³,
    (1/V)∂E/∂ε (zero for non-periodic graphs); vectors: named per-atom heads (N, 3), dimensionless;
    embedding (G, C) graph embedding (SCD); node: backbone features; positions (N, 3) used.
    """

    node: NodeFeatures
    positions: torch.Tensor
    energy: torch.Tensor | None = None
    forces: torch.Tensor | None = None
    forces_mode: str | None = None
    stress: torch.Tensor | None = None
    vectors: dict[str, torch.Tensor] = field(default_factory=dict)
    embedding: torch.Tensor | None = None


def _task_specs(tasks: Sequence[str] | Mapping[str, TaskSpec]) -> dict[str, TaskSpec]:
    if isinstance(tasks, Mapping):
        return dict(tasks)
    return {name: task_spec(name) for name in tasks}


class AtomisticModel(nn.Module):
    """Backbone + heads. Task ids (`ModelInputs.task`, from `batch.task`) index `self.tasks`.

    Args:
        backbone: a backbone config with `.build()` (e.g. `PaiNNConfig.tiny()`).
        tasks: task names, or a mapping name -> TaskSpec whose normalisers (s_E, μ_E, s_F) and
            linear reference become buffers (so a checkpoint de-normalises by itself).
        vector_heads: names of extra per-atom vector heads ("noise" for denoising, "mask" for H-masking).
    """

    def __init__(self, backbone, tasks: Sequence[str] | Mapping[str, TaskSpec], vector_heads: Sequence[str] = ("noise", "mask")):
        super().__init__()
        specs = _task_specs(tasks)
        if not specs:
            raise ValueError("AtomisticModel: at least one task is required")
        self.backbone_config = backbone
        self.tasks = tuple(specs)
        self.backbone: Backbone = backbone.build()
        fs, fv = self.backbone.num_scalars, self.backbone.num_vectors
        self.energy_heads = TaskHeads({t: EnergyHead(fs) for t in self.tasks})
        self.force_heads = TaskHeads({t: VectorHead(fs, fv) for t in self.tasks})
        self.vector_heads = nn.ModuleDict({name: VectorHead(fs, fv) for name in vector_heads})
        cond = self.backbone.condition_dim
        self.embedding_head = GraphEmbeddingHead(fs, cond) if cond > 0 else None
        self.null_condition = nn.Parameter(torch.zeros(cond)) if cond > 0 else None
        self.register_buffer("energy_mean", torch.zeros(len(self.tasks), dtype=torch.float64))
        # TaskSpec.mean_reference: configuration (config_dict carries it), so not in the state dict,
        # and checkpoints written before it existed still load.
        self.register_buffer("mean_per_atom", torch.zeros(len(self.tasks), dtype=torch.bool), persistent=False)
        self.register_buffer("energy_std", torch.ones(len(self.tasks), dtype=torch.float64))
        self.register_buffer("force_std", torch.ones(len(self.tasks), dtype=torch.float64))
        self.register_buffer("linear_reference", torch.zeros(len(self.tasks), NUM_ATOM_TYPES, dtype=torch.float64))
        # Which tasks' rows of linear_reference are trained (`train_references`); configuration, not state.
        self.register_buffer("reference_trained", torch.zeros(len(self.tasks), dtype=torch.bool), persistent=False)
        self.set_task_statistics(specs)

    # ---- configuration -------------------------------------------------------------------------
    @property
    def capabilities(self) -> frozenset[Capability]:
        return self.backbone.capabilities | {Capability.TASK_HEADS}

    def set_task_statistics(self, specs: Mapping[str, TaskSpec]) -> None:
        """Copy normalisers and linear references from TaskSpecs (e.g. after reading a manifest)."""
        with torch.no_grad():
            for i, name in enumerate(self.tasks):
                spec = specs.get(name)
                if spec is None:
                    continue
                self.energy_mean[i], self.energy_std[i], self.force_std[i] = spec.energy_mean, spec.energy_std, spec.force_std
                self.mean_per_atom[i] = spec.mean_reference == "atom"
                self.linear_reference[i].zero_()
                for z, value in spec.linear_reference.items():
                    self.linear_reference[i, int(z)] = value

    def train_references(self, tasks: Sequence[str]) -> None:
        """Make the per-element linear references of `tasks` trainable: `linear_reference` becomes an
        `nn.Parameter` (same name and values, so state dicts, checkpoints and exports are unchanged)
        whose rows of the other tasks get no gradient. Call before building the optimizer."""
        unknown = [t for t in tasks if t not in self.tasks]
        if unknown:
            raise ValueError(f"train_references: unknown tasks {unknown}; this model has {list(self.tasks)}")
        with torch.no_grad():
            for name in tasks:
                self.reference_trained[self.tasks.index(name)] = True
        if not isinstance(self.linear_reference, nn.Parameter):
            value = self.linear_reference.detach().clone()
            del self._buffers["linear_reference"]
            self.linear_reference = nn.Parameter(value)

    def config_dict(self) -> dict[str, Any]:
        """A JSON-able dict from which `from_config_dict` rebuilds the same architecture and statistics."""
        cls = type(self.backbone_config)
        stats = {}
        for i, name in enumerate(self.tasks):
            ref = {int(z): float(v) for z, v in enumerate(self.linear_reference[i].tolist()) if v != 0.0}
            stats[name] = {"energy_mean": float(self.energy_mean[i]), "energy_std": float(self.energy_std[i]),
                           "force_std": float(self.force_std[i]), "linear_reference": ref,
                           "mean_reference": "atom" if bool(self.mean_per_atom[i]) else "structure"}
        return {
            "backbone_class": f"{cls.__module__}.{cls.__qualname__}",
            "backbone": dataclasses.asdict(self.backbone_config),
            "tasks": list(self.tasks),
            "task_statistics": stats,
            "vector_heads": list(self.vector_heads),
        }

    @classmethod
    def from_config_dict(cls, config: Mapping[str, Any]) -> AtomisticModel:
        """Inverse of `config_dict` (weights are loaded separately, e.g. from safetensors)."""
        module_name, _, class_name = config["backbone_class"].rpartition(".")
        if not module_name.startswith("atomforge."):
            raise ValueError(f"backbone_class must be an atomforge config class, got {config['backbone_class']!r}")
        backbone = getattr(importlib.import_module(module_name), class_name)(**config["backbone"])
        specs = {}
        for name in config["tasks"]:
            st = config.get("task_statistics", {}).get(name)
            specs[name] = TaskSpec(name) if st is None else TaskSpec(
                name, energy_mean=st["energy_mean"], energy_std=st["energy_std"], force_std=st["force_std"],
                linear_reference={int(z): v for z, v in st["linear_reference"].items()},
                mean_reference=st.get("mean_reference", "structure"))  # models saved before the option: per structure
        return cls(backbone, specs, vector_heads=tuple(config["vector_heads"]))

    def ddp_anchor(self) -> torch.Tensor:
        """0 · Σ(all parameters): add to a loss so heads unused in a step still get a (zero) gradient under DDP."""
        return sum(p.sum() for p in self.parameters()) * 0.0

    # ---- forward -------------------------------------------------------------------------------
    def forward(
        self,
        inputs,
        *,
        energy: bool = True,
        forces: str | None = None,
        stress: bool = False,
        vector_heads: Sequence[str] = (),
        embedding: bool = False,
        freeze_embedding: bool = False,
        create_graph: bool | None = None,
    ) -> ModelOutput:
        """Run the backbone on `inputs` and the heads the keywords ask for.

        inputs: a `ModelInputs` (an objective's corrupted view) or a batch (`atomforge.batch`),
        read as `ModelInputs.clean(batch)`. energy: the per-task energy (G,) eV. forces: None,
        "direct" (per-task heads) or "gradient" (-∂E/∂x). stress: (1/V)∂E/∂ε by a symmetric strain.
        vector_heads: names of per-atom vector heads to evaluate. embedding: the graph embedding
        (G, C) (SCD). freeze_embedding: detach the atom-type embedding (SCD). create_graph: keep
        the graph of gradient forces / stress for a backward pass (default `self.training`).
        """
        self._check_request(forces, vector_heads, embedding)
        if not isinstance(inputs, ModelInputs):
            inputs = ModelInputs.clean(inputs)
        graph, num_graphs = inputs.graph, inputs.num_graphs
        pos, cell = inputs.positions, inputs.cell.to(inputs.positions.dtype)
        need_grad = forces == "gradient" or stress
        strain, pos_in = None, pos
        if need_grad:
            pos, strain, pos_in, cell = self._strained(pos, cell, graph, num_graphs)
        edge_index, edge_vec, shifts = self._edges(pos_in, cell, inputs.edge_index, inputs.shifts.to(pos.dtype), graph)
        node = self.backbone(BackboneInputs(
            z=inputs.z, edge_index=edge_index, edge_vec=edge_vec, graph=graph, num_graphs=num_graphs,
            vector_input=inputs.vector_input, freeze_embedding=freeze_embedding, shifts=shifts,
            condition=self._condition(inputs.condition, inputs.drop_condition, num_graphs)))
        out = ModelOutput(node=node, positions=pos)
        atom_task = inputs.task[graph]
        if energy or need_grad:
            out.energy, scaled = self._energy(node.scalars, inputs, atom_task)
        if need_grad:
            create = self.training if create_graph is None else create_graph
            self._derivatives(out, scaled, pos, strain if stress else None, inputs, forces == "gradient", create)
        if forces == "direct":
            direct = self.force_heads(atom_task, node.scalars, node.vectors).to(node.scalars.dtype)
            out.forces, out.forces_mode = direct * self.force_std[atom_task].to(direct.dtype).unsqueeze(-1), "direct"
        out.vectors = {name: self.vector_heads[name](node.scalars, node.vectors) for name in vector_heads}
        if embedding:
            out.embedding = self.embedding_head(node.scalars, graph, num_graphs)
        return out

    def _check_request(self, forces: str | None, vector_heads: Sequence[str], embedding: bool) -> None:
        if forces not in (None, *FORCE_MODES):
            raise ValueError(f"forces must be None, 'direct' or 'gradient', got {forces!r}")
        unknown = [name for name in vector_heads if name not in self.vector_heads]
        if unknown:
            raise ValueError(f"unknown vector heads {unknown}; this model has {list(self.vector_heads)}")
        if embedding and self.embedding_head is None:
            raise ValueError("embedding requested but the backbone has condition_dim = 0")

    @staticmethod
    def _strained(pos, cell, graph, num_graphs):
        """Leaf positions and a zero symmetric strain ε (G, 3, 3) that energies are differentiated by.

        Returns (pos leaf, strain leaf, pos (I+ε), cell (I+ε))."""
        pos = pos if pos.requires_grad else pos.detach().requires_grad_(True)
        strain = torch.zeros(num_graphs, 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
        sym = 0.5 * (strain + strain.transpose(1, 2))
        return pos, strain, pos + torch.einsum("ni,nij->nj", pos, sym[graph]), cell + cell @ sym

    @staticmethod
    def _derivatives(out, scaled, pos, strain, inputs: ModelInputs, want_forces: bool, create_graph: bool) -> None:
        """Fill out.forces = -∂E/∂x (eV/Å) and/or out.stress = (1/V)∂E/∂ε (eV/Å³, 0 if not periodic)."""
        grads = torch.autograd.grad(scaled.sum(), [pos] if strain is None else [pos, strain], create_graph=create_graph)
        if want_forces:
            out.forces, out.forces_mode = -grads[0], "gradient"
        if strain is not None:
            volume = torch.linalg.det(inputs.cell.to(pos.dtype)).abs()
            periodic = inputs.pbc.any(dim=1) & (volume > 1e-8)
            stress = grads[1] / torch.where(periodic, volume, torch.ones_like(volume))[:, None, None]
            out.stress = stress * periodic[:, None, None]

    def _edges(self, pos, cell, edge_index, shifts, graph):
        """(edge_index, edge vectors (E, 3) from positions so gradients flow, shifts) without the edges
        beyond the backbone cutoff."""
        src, dst = edge_index
        vec = pos[src] + torch.einsum("ei,eij->ej", shifts, cell[graph[dst]]) - pos[dst]
        length = torch.linalg.norm(vec.detach(), dim=-1)
        keep = (length < self.backbone.cutoff) & (length > 1e-6)
        return edge_index[:, keep], vec[keep], shifts[keep]

    def _condition(self, condition, drop, num_graphs):
        if self.null_condition is None:
            if condition is not None:
                raise ValueError("condition given but the backbone has condition_dim = 0")
            return None
        null = self.null_condition.unsqueeze(0).expand(num_graphs, -1)
        if condition is None:
            return null
        if drop is None:
            return condition
        return torch.where(drop.unsqueeze(-1), null, condition)

    def _energy(self, scalars, inputs: ModelInputs, atom_task):
        """Returns (physical energy (G,) float64 eV, the position-dependent part (G,) in model dtype)."""
        graph, graph_task, num_graphs = inputs.graph, inputs.task, inputs.num_graphs
        # Under autocast the heads' linear layers give bf16/fp16; sums over atoms accumulate in the
        # backbone's dtype (fp32), so a head output is cast to it rather than the sum rounded down.
        per_atom = self.energy_heads(atom_task, scalars).to(scalars.dtype)
        normalised = scalars.new_zeros(num_graphs).index_add_(0, graph, per_atom)
        scaled = normalised * self.energy_std[graph_task].to(scalars.dtype)
        # Per-atom terms (linear reference, the per-atom mean) are summed over atoms: extensive.
        per_atom_mean = torch.where(self.mean_per_atom[atom_task], self.energy_mean[atom_task], 0.0)
        table = self.linear_reference
        if isinstance(table, nn.Parameter):  # only the trained tasks' rows get a gradient
            table = torch.where(self.reference_trained.unsqueeze(-1), table, table.detach())
        reference = torch.zeros(num_graphs, dtype=torch.float64, device=scalars.device).index_add_(
            0, graph, table[atom_task, inputs.z] + per_atom_mean)
        per_structure_mean = torch.where(self.mean_per_atom[graph_task], 0.0, self.energy_mean[graph_task])
        return scaled.double() + per_structure_mean + reference, scaled
