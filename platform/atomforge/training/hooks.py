"""Trainer hooks: code that runs at fixed points of the loop without living in it (early stopping, fault injection, ...).

The points, in order (every rank calls every hook at every point):
    on_start(trainer)                   after the weights and state are restored, before the first step
    before_step(trainer)                before each optimizer step (trainer.step = steps done so far)
    after_step(trainer, metrics)        after each step: this rank's metrics of the step
    after_validation(trainer, metrics)  after each validation: metrics merged over all ranks (identical
                                        on every rank, so decisions taken here agree across ranks)
    on_end(trainer)                     after the last step and the last checkpoint
A hook stops the run with `trainer.request_stop(reason)`: the trainer finishes that step, writes a
checkpoint and returns. A hook with state returns it from `state_dict()` (kept in every
checkpoint under its `name`) and gets it back from `load_state_dict()` when a run resumes.
Hooks that are not picklable cannot travel to Ray workers: keep them small plain objects.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from atomforge.tasks import TaskSpec


class Hook:
    """No-op base: override the points a hook needs."""

    name = "hook"

    def on_start(self, trainer) -> None:
        return None

    def before_step(self, trainer) -> None:
        return None

    def after_step(self, trainer, metrics: Mapping[str, float]) -> None:
        return None

    def after_validation(self, trainer, metrics: Mapping[str, float]) -> None:
        return None

    def on_end(self, trainer) -> None:
        return None

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None


def selection_score(metrics: Mapping[str, float], spec: TaskSpec, per_atom: bool = False) -> float:
    """The validation score model selection minimises for task `spec.name`: the loss's weighting of the
    clean MAEs, λ_E·MAE_E/s_E + λ_F·MAE_F/s_F (eV / eV over eV/Å / eV/Å: dimensionless).

    per_atom: the energy term uses the per-atom energy MAE (a property stored as N·p); forces are
    left out where the task has none. Raises KeyError when the task has no validation energies."""
    prefix = f"val/{spec.name}/"
    energy = metrics[prefix + ("energy_per_atom_mae" if per_atom else "energy_mae")]
    score = spec.energy_weight * energy / (1.0 if per_atom else spec.energy_std)
    if prefix + "force_mae" in metrics and spec.force_weight > 0:
        score += spec.force_weight * metrics[prefix + "force_mae"] / spec.force_std
    return float(score)


class EarlyStopping(Hook):
    """Keeps the validated weights (the EMA copy where there is one) with the best score and stops after
    `patience` validations without improvement (None: runs the whole budget). The score is the sum of
    `selection_score` over `specs` (one task, or every downstream task of a multi-task fine-tuning:
    each is dimensionless, so tasks in other units add); `per_atom`: per task, as `selection_score`.

    `best_state` is the best weights' state dict (a copy, on the CPU); `best_step` the step they were
    validated at. Both are saved in checkpoints, so a resumed run selects among all its validations.
    """

    name = "early_stopping"

    def __init__(self, specs: Sequence[TaskSpec], patience: int | None = None, per_atom: Sequence[bool] = ()):
        if not specs:
            raise ValueError("EarlyStopping: no task to select on")
        self.specs, self.patience = list(specs), patience
        self.per_atom = list(per_atom) or [False] * len(self.specs)
        self.best_score, self.best_step, self.best_state = float("inf"), -1, None
        self.validations_since_best = 0

    def score(self, trainer, metrics: Mapping[str, float]) -> float:
        """The selection score of `metrics`; each task's is logged as val/<task>/score (several: their sum as val/score)."""
        scores = {spec.name: selection_score(metrics, spec, per_atom) for spec, per_atom in zip(self.specs, self.per_atom)}
        logged = {f"val/{name}/score": value for name, value in scores.items()}
        if len(scores) > 1:
            logged["val/score"] = sum(scores.values())
        trainer.log_scalars(logged, kind="selection")
        return float(sum(scores.values()))

    def after_validation(self, trainer, metrics: Mapping[str, float]) -> None:
        score = self.score(trainer, metrics)
        if score < self.best_score:
            self.best_score, self.best_step, self.validations_since_best = score, trainer.step, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in trainer.validated_model().state_dict().items()}
            return
        self.validations_since_best += 1
        if self.patience is not None and self.validations_since_best >= self.patience:
            trainer.request_stop(f"early stop at step {trainer.step}: no better validation score for "
                                 f"{self.patience} validations (best at step {self.best_step})")

    def on_end(self, trainer) -> None:
        """The best weights as the run's `best/` checkpoint (what fine-tuning evaluates and exports)."""
        if self.best_state is not None:
            trainer.save_weights("best", self.best_state, {"best_step": self.best_step, "best_score": self.best_score})

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_step": self.best_step, "best_state": copy.copy(self.best_state),
                "validations_since_best": self.validations_since_best}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_score, self.best_step = float(state["best_score"]), int(state["best_step"])
        self.best_state, self.validations_since_best = state["best_state"], int(state["validations_since_best"])
