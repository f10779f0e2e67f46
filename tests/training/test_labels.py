"""Label-free corpora train the label-free objectives; a supervised objective on them is refused up front."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from atomforge.objectives import (
    SCD,
    CoordinateDenoising,
    DerivativeForceField,
    HydrogenMasking,
    JMPSupervised,
    MixEntry,
    ObjectiveMix,
)
from atomforge.recipes.jmp import debug_cpu, only_tasks, with_data, with_objectives
from atomforge.tasks import TaskSpec
from atomforge.training.launch import train
from atomforge.training.overrides import apply_overrides

from .conftest import publish, synthetic_structure
from .helpers import train_losses


@pytest.fixture(scope="module")
def unlabeled(tmp_path_factory) -> str:
    """A corpus without energies or forces; its manifest statistics come from the pipeline's accumulator."""
    rng = np.random.default_rng(11)
    unlabel = [dataclasses.replace(synthetic_structure("ani1x", i, rng, periodic=False), energy=None, forces=None)
               for i in range(16)]
    return publish(tmp_path_factory.mktemp("unlabeled"), "ani1x", {"train": unlabel[:12], "val": unlabel[12:]})


def config_on(url, output, *entries):
    config = with_objectives(only_tasks(with_data(debug_cpu(), {"ani1x": url}), ("ani1x",)), *entries)
    return apply_overrides(config, ["scaling.num_workers=0", f"checkpoint.output={output}", "max_steps=2",
                                    "log_every=1", "val_every=2", "data.max_atoms=64"])


def test_label_free_corpus_trains_scd_denoising_and_hydrogen_masking(unlabeled, tmp_path):
    train(config_on(unlabeled, tmp_path, MixEntry(SCD()), MixEntry(CoordinateDenoising()), MixEntry(HydrogenMasking())))
    losses = train_losses(tmp_path)
    assert sorted(losses) == [1, 2] and all(math.isfinite(v) and v > 0 for v in losses.values())


def test_supervised_objective_on_an_unlabeled_task_is_a_config_error(unlabeled, tmp_path):
    with pytest.raises(ValueError, match=r"jmp needs \['energy', 'forces'\] but task 'ani1x' has labels \[\]"):
        train(config_on(unlabeled, tmp_path, MixEntry(JMPSupervised())))
    assert not (tmp_path / "logs").exists()  # refused in the driver, before any worker started


def test_stress_term_that_no_task_feeds_is_a_warning():
    specs = {"a": TaskSpec("a", labels=("energy", "forces")), "b": TaskSpec("b", labels=("energy", "forces"))}
    notes = ObjectiveMix([(DerivativeForceField(), 1.0)]).check_labels(specs)
    assert len(notes) == 1 and "no task has 'stress' labels" in notes[0]
    with_stress = {**specs, "c": TaskSpec("c", labels=("energy", "forces", "stress"))}
    assert ObjectiveMix([(DerivativeForceField(), 1.0)]).check_labels(with_stress) == []
