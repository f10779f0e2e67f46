"""The objective interface: what an objective declares, the context it runs in and what it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from atomforge.models.backbone import Capability
from atomforge.tasks import TaskSpec


@dataclass
class ObjectiveContext:
    """Everything an objective needs besides the model and the batch.

    generator: the only source of randomness (seeded per rank and step by the trainer);
    step / total_steps: for schedules (λ_D decay); tasks: TaskSpecs by name; task_names: the
    names in id order (`batch.task` indexes it, = `model.tasks`); training: create_graph for
    gradient forces; skin (Å) / k_store: the storage parameters `regraph` needs (0 / None when the
    batch's graph was built without a skin: every corrupted structure is then rebuilt exactly).
    """

    generator: torch.Generator
    tasks: Mapping[str, TaskSpec]
    task_names: Sequence[str]
    step: int = 0
    total_steps: int = 1
    training: bool = True
    skin: float = 0.0
    k_store: int | None = None

    def __post_init__(self) -> None:
        missing = [name for name in self.task_names if name not in self.tasks]
        if missing:
            raise ValueError(f"ObjectiveContext: task_names {missing} have no TaskSpec in `tasks`")

    def per_graph(self, batch, attribute: str) -> torch.Tensor:
        """A TaskSpec attribute (e.g. 'energy_std', 'force_weight') for each graph, (G,) float64."""
        values = torch.tensor([float(getattr(self.tasks[name], attribute)) for name in self.task_names],
                              dtype=torch.float64, device=batch.task.device)
        return values[batch.task]

    def task_of_graph(self, batch) -> list[str]:
        return [self.task_names[t] for t in batch.task.tolist()]


@dataclass
class ObjectiveResult:
    """loss: a scalar tensor to backpropagate; metrics: floats (MAEs in eV and eV/Å, named per task)."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class Objective:
    """Base of all objectives. Subclasses set the class attributes and implement `run`.

    requires: capabilities the model must have; labels: label fields every task it trains on must
    have ("energy", "forces"); optional_labels: fields used where present (a term that is off when no
    task has them, e.g. stress); heads: named vector heads used; supervised: True when the objective already contains
    the supervised energy/force loss (a mix may hold at most one, so forces are never counted twice);
    forces: the force parameterisation it trains ("direct" heads, "gradient" = -∂E/∂x, None for
    none), which validation evaluates (`ObjectiveMix.force_mode`).
    """

    name: str = "objective"
    requires: frozenset[Capability] = frozenset()
    labels: tuple[str, ...] = ()
    optional_labels: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    supervised: bool = False
    forces: str | None = None

    def frozen_parameters(self, model) -> list:
        """Parameters this objective never trains (none by default; SCD: the atom embedding)."""
        return []

    def run(self, model, batch, ctx: ObjectiveContext) -> ObjectiveResult:  # pragma: no cover - interface
        raise NotImplementedError
