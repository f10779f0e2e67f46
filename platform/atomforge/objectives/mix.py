"""ObjectiveMix: objectives combined with weights, gates and schedules, capabilities checked up front."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from atomforge.models.backbone import unwrap
from atomforge.objectives.objective import Objective, ObjectiveContext, ObjectiveResult
from atomforge.tasks import TaskSpec

Weight = float | Callable[[int, int], float]  # a constant or schedule(step, total_steps) -> weight


@dataclass(frozen=True)
class LinearSchedule:
    """Weight going linearly from `start` (step 0) to `end` (total_steps)."""

    start: float
    end: float = 0.0

    def __call__(self, step: int, total_steps: int) -> float:
        frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
        return self.start + (self.end - self.start) * frac


@dataclass(frozen=True)
class MixEntry:
    """One objective in a mix. probability: run it in a step with this probability (a gate drawn
    from ctx.generator); every: run it only on steps divisible by `every`."""

    objective: Objective
    weight: Weight = 1.0
    probability: float = 1.0
    every: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"MixEntry({self.objective.name}).probability must be in [0, 1], got {self.probability}")
        if self.every < 1:
            raise ValueError(f"MixEntry({self.objective.name}).every must be >= 1, got {self.every}")


def check_model(objectives: Sequence[Objective], model) -> None:
    """Raise ValueError naming each objective whose capabilities or heads the model lacks."""
    model = unwrap(model)
    problems = []
    for objective in objectives:
        missing = sorted(c.value for c in objective.requires - model.capabilities)
        if missing:
            problems.append(f"{objective.name} requires capabilities {missing} that {type(model.backbone).__name__} lacks")
        heads = [h for h in objective.heads if h not in model.vector_heads]
        if heads:
            problems.append(f"{objective.name} needs vector heads {heads}; build the model with vector_heads including them")
    if problems:
        raise ValueError("ObjectiveMix: " + "; ".join(problems))


class ObjectiveMix:
    """Weighted sum of objectives: `ObjectiveMix([(JMPSupervised(), 1.0), (SCD(), LinearSchedule(1, 0))], model)`.

    Entries are (objective, weight), (objective, weight, probability) or MixEntry. With `model`
    given, capabilities and heads are checked here (else on the first run). The total adds
    `model.ddp_anchor()` so heads a step leaves unused still get a zero gradient under DDP.
    """

    def __init__(self, entries: Sequence, model=None):
        self.entries = [e if isinstance(e, MixEntry) else MixEntry(*e) for e in entries]
        if not self.entries:
            raise ValueError("ObjectiveMix needs at least one objective")
        supervised = [e.objective.name for e in self.entries if e.objective.supervised]
        if len(supervised) > 1:
            raise ValueError(f"ObjectiveMix: {supervised} each contain the supervised loss; keep one so forces count once")
        names = [e.objective.name for e in self.entries]
        if len(set(names)) != len(names):
            raise ValueError(f"ObjectiveMix: objective names must be unique, got {names}")
        self._checked = False
        if model is not None:
            self.check(model)

    def check(self, model) -> None:
        check_model([e.objective for e in self.entries], model)
        self._checked = True

    def check_labels(self, specs: Mapping[str, TaskSpec]) -> list[str]:
        """Check the tasks' labels (TaskSpec.labels, from their manifests) against the objectives.

        Raises ValueError naming every (objective, task) where a required label is missing (a
        supervised objective on an unlabeled corpus); returns warnings for optional labels no task
        has (e.g. DerivativeForceField's stress term, which is then off). Tasks whose labels are
        unknown (labels None) are not checked.
        """
        known = {name: set(spec.labels) for name, spec in specs.items() if spec.labels is not None}
        problems, warnings = [], []
        for entry in self.entries:
            objective = entry.objective
            for task, labels in known.items():
                missing = [label for label in objective.labels if label not in labels]
                if missing:
                    problems.append(f"{objective.name} needs {missing} but task {task!r} has labels {sorted(labels)}")
            for label in objective.optional_labels:
                if known and len(known) == len(specs) and not any(label in labels for labels in known.values()):
                    warnings.append(f"{objective.name}: no task has {label!r} labels, so its {label} term is off "
                                    f"(tasks {sorted(known)}); the run trains without it")
        if problems:
            raise ValueError("ObjectiveMix: " + "; ".join(problems) + ". Remove the task or the objective "
                             "(label-free objectives: SCD, CoordinateDenoising, HydrogenMasking)")
        return warnings

    def frozen_parameters(self, model) -> list:
        """Parameters that no objective of the mix trains (frozen by every entry): the optimizer
        leaves them out (`training.optim.build_optimizer`). SCD alone freezes the atom embedding;
        SCD + JMP does not (JMP trains it)."""
        per_entry = [{id(p): p for p in e.objective.frozen_parameters(model)} for e in self.entries]
        common = set.intersection(*(set(d) for d in per_entry))
        return [p for p in per_entry[0].values() if id(p) in common]

    @property
    def force_mode(self) -> str:
        """The force parameterisation this mix trains, which validation evaluates: the supervised
        objective's, else "gradient" when any objective trains -∂E/∂x, else "direct"."""
        supervised = [e.objective.forces for e in self.entries if e.objective.supervised and e.objective.forces]
        if supervised:
            return supervised[0]
        return "gradient" if any(e.objective.forces == "gradient" for e in self.entries) else "direct"

    def run(self, model, batch, ctx: ObjectiveContext) -> ObjectiveResult:
        """Total loss (scalar) and metrics '<objective>/<metric>', '<objective>/weight', 'loss'."""
        if not self._checked:
            self.check(model)
        if tuple(ctx.task_names) != tuple(unwrap(model).tasks):
            raise ValueError(f"ctx.task_names {list(ctx.task_names)} must equal model.tasks {list(unwrap(model).tasks)} (batch.task indexes both)")
        total = unwrap(model).ddp_anchor()
        metrics: dict[str, float] = {}
        for entry in self.entries:
            weight = entry.weight(ctx.step, ctx.total_steps) if callable(entry.weight) else float(entry.weight)
            gate = entry.probability >= 1.0 or float(torch.rand((), generator=ctx.generator, device=ctx.generator.device)) < entry.probability
            if weight == 0.0 or not gate or ctx.step % entry.every:
                continue
            result = entry.objective.run(model, batch, ctx)
            total = total + weight * result.loss
            name = entry.objective.name
            metrics[f"{name}/weight"] = weight
            metrics.update({f"{name}/{k}": v for k, v in result.metrics.items()})
        metrics["loss"] = float(total.detach())
        return ObjectiveResult(total, metrics)
