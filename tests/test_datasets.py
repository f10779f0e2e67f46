"""Dataset specs: each corpus's one record is what the reader, the pipeline and the recipes use."""

from __future__ import annotations

import subprocess
import sys

import pytest
from atomforge.datasets import DATASETS, PRETRAINING, DatasetSpec, dataset_spec, dens_values, task_spec
from atomforge.objectives import DeNS
from atomforge.pipeline import PipelineConfig
from atomforge.recipes.jmp import debug_cpu, jmp_dens, jmp_s
from atomforge.tasks import TaskSpec


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_reader_and_energy_convention_are_the_corpus_own(name):
    spec = DATASETS[name]
    reader = spec.reader()
    assert isinstance(reader, type) and reader.name == name
    assert reader.energy_convention == spec.task.energy_convention


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_pipeline_builds_the_spec_graph_unless_overridden(name):
    config = PipelineConfig.for_corpus(name, "in", "out")
    assert (config.cutoff, config.max_neighbors) == (DATASETS[name].task.cutoff, DATASETS[name].task.max_neighbors)
    assert PipelineConfig.for_corpus(name, "in", "out", cutoff=3.0, max_neighbors=None).cutoff == 3.0


def test_recipes_train_the_pretraining_corpora_with_their_specs():
    assert PRETRAINING == ("oc20", "oc22", "ani1x", "transition1x")
    for config in (debug_cpu(), jmp_s()):
        assert tuple(config.data.tasks) == PRETRAINING
        for name, task in config.data.tasks.items():
            spec = DATASETS[name].task
            # the graph is the model's (one cutoff owner); everything else is the corpus record's
            assert {**vars(task.spec), "cutoff": 0, "max_neighbors": 0} == {**vars(spec), "cutoff": 0, "max_neighbors": 0}
    dens = jmp_dens().objectives["dens"].objective
    assert isinstance(dens, DeNS)
    for name in PRETRAINING:
        assert dens.sigma[name] == DATASETS[name].dens_sigma and dens.noise_weight[name] == DATASETS[name].dens_noise_weight
    assert (dens.sigma["oc22"], dens.noise_weight["oc22"]) == (0.15, 25.0)  # OBJECTIVES.md §2


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown corpus 'nope'; expected one of"):
        dataset_spec("nope")
    assert task_spec("water_ft") == TaskSpec("water_ft")
    assert task_spec("oc20") is DATASETS["oc20"].task
    assert dens_values("dens_sigma", ["rmd17"]) == {"rmd17": 0.05}
    with pytest.raises(ValueError, match="field must be"):
        dens_values("sigma")
    with pytest.raises(ValueError, match="its task is named 'b'"):
        DatasetSpec("a", DATASETS["ase"].reader, TaskSpec("b"))


def test_specs_import_no_reader():
    """`import atomforge.datasets` (done by the pipeline config, models, recipes) loads no reader module."""
    code = "import sys, atomforge.datasets; print(sorted(m for m in sys.modules if m.startswith('atomforge.corpora')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
