"""Typed run configs: --set overrides with type conversion and clear errors; schedule; resolved JSON."""

from __future__ import annotations

import json

import pytest
from atomforge.finetune.run import run_variant
from atomforge.recipes.finetune import rmd17_debug
from atomforge.recipes.jmp import RECIPES, debug_cpu, jmp_l, jmp_s, with_data
from atomforge.tasks import TaskSpec
from atomforge.training.config import check_cutoffs
from atomforge.training.data import open_source, resolve_spec
from atomforge.training.optim import lr_factor
from atomforge.training.overrides import apply_overrides, to_jsonable


def test_overrides_convert_to_field_types():
    c = apply_overrides(debug_cpu(), ["optim.lr=1e-4", "optim.betas=(0.8, 0.9)", "max_steps=7",
                                      "data.tasks.oc20.spec.force_weight=50", "objectives.jmp.weight=2",
                                      "data.max_structures=None", "scaling.use_gpu=True", "checkpoint.output=s3://b/r"])
    assert c.optim.lr == 1e-4 and c.optim.betas == (0.8, 0.9) and c.max_steps == 7
    assert c.data.tasks["oc20"].spec.force_weight == 50.0 and c.objectives["jmp"].weight == 2.0
    assert c.scaling.use_gpu is True and c.checkpoint.output == "s3://b/r"


@pytest.mark.parametrize(("assignment", "message"), [
    ("optim.lrr=1", "OptimConfig has no field 'lrr'"),
    ("optim.lr=fast", "cannot use 'fast' as float"),
    ("data.tasks.qm9.url=x", "no entry 'qm9'"),
    ("scaling.amp=fp8", "scaling.amp must be one of"),
    ("max_steps", "expects a.b=value"),
    ("max_steps=None", "cannot be None"),
])
def test_bad_overrides_fail_clearly(assignment, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(debug_cpu(), [assignment])


def test_unknown_data_task_is_an_error():
    with pytest.raises(ValueError, match="unknown task"):
        with_data(debug_cpu(), {"qm9": "x"})


def test_jmp_recipes_follow_the_paper():
    for config in (jmp_s(), jmp_l()):
        o = config.optim
        assert (o.lr, o.betas, o.weight_decay, o.warmup_steps, o.warmup_start_factor, o.min_lr_factor,
                o.grad_clip, o.ema_decay) == (3e-4, (0.9, 0.95), 0.1, 2000, 0.2, 0.1, 1.0, 0.99)
        assert config.data.temperature == 2.0 and config.scaling.use_gpu
        weights = {t: d.spec.force_weight for t, d in config.data.tasks.items()}
        assert weights == {"oc20": 73.0, "oc22": 80.0, "ani1x": 15.0, "transition1x": 14.0}
    for build in RECIPES.values():
        json.dumps(to_jsonable(build()))  # every recipe renders as the resolved config


def test_lr_schedule_warmup_then_cosine():
    o = jmp_s().optim
    assert lr_factor(0, 100_000, o) == pytest.approx(0.2)
    assert lr_factor(1000, 100_000, o) == pytest.approx(0.6)
    assert lr_factor(2000, 100_000, o) == pytest.approx(1.0)
    assert lr_factor(100_000, 100_000, o) == pytest.approx(0.1)
    mid = 2000 + (100_000 - 2000) // 2
    assert lr_factor(mid, 100_000, o) == pytest.approx(0.55, abs=1e-3)


def test_every_recipe_has_one_cutoff():
    for name, build in RECIPES.items():
        config = build()
        check_cutoffs(config)
        assert {t.spec.cutoff for t in config.data.tasks.values()} == {config.model.cutoff}, name


def test_model_and_graph_cutoffs_that_differ_are_an_error():
    with pytest.raises(ValueError, match=r"model cutoff 6.0 Å differs from the graph cutoff of tasks \{'oc20': 5.0"):
        check_cutoffs(apply_overrides(debug_cpu(), ["model.cutoff=6.0"]))
    check_cutoffs(apply_overrides(debug_cpu(), ["model.cutoff=6.0"] + [f"data.tasks.{t}.spec.cutoff=6.0" for t in
                                                                     debug_cpu().data.tasks]))


def test_stored_graphs_must_cover_the_task_graph(tiny_shards):
    source = open_source("oc20", tiny_shards["oc20"])  # stored at 5 Å, K_store 30
    resolve_spec(TaskSpec("oc20", 5.0, 20), source)
    with pytest.raises(ValueError, match="stores graphs built at 5.0 Å, but the task"):
        resolve_spec(TaskSpec("oc20", 6.0, 20), source)
    with pytest.raises(ValueError, match="fewer than the task's max_neighbors 40"):
        resolve_spec(TaskSpec("oc20", 5.0, 40), source)


def test_finetuning_task_cutoff_must_be_the_backbone_cutoff(tmp_path):
    config = apply_overrides(rmd17_debug(), [f"checkpoint.output={tmp_path}", "data.tasks.rmd17.spec.cutoff=6.0"])
    with pytest.raises(ValueError, match=r"model cutoff 5.0 Å differs from the graph cutoff of tasks \{'rmd17': 6.0\}"):
        run_variant(config, None, "scratch")  # refused before any data is opened


def test_fp16_needs_a_gpu_whatever_the_override_order():
    from atomforge.training.launch import check_data

    with pytest.raises(ValueError, match="scaling.amp=fp16 needs scaling.use_gpu=True"):
        check_data(apply_overrides(debug_cpu(), ["scaling.amp=fp16"]))  # refused before any data is opened
    both = apply_overrides(debug_cpu(), ["scaling.amp=fp16", "scaling.use_gpu=True"])  # amp first: accepted
    assert (both.scaling.amp, both.scaling.use_gpu) == ("fp16", True)
    assert apply_overrides(debug_cpu(), ["scaling.amp=bf16"]).scaling.amp == "bf16"  # bf16 autocasts on CPU


def test_num_workers_range_is_ray_trains_elastic_range_with_the_global_batch_of_the_most():
    from atomforge.training.config import worker_overrides
    from atomforge.training.ray_train import torch_trainer

    elastic = apply_overrides(jmp_s(), worker_overrides("8..16")).scaling  # jmp_s: 8 fixed workers
    assert (elastic.min_workers, elastic.num_workers, elastic.lanes, elastic.elastic) == (8, 16, 16, True)
    fixed = apply_overrides(jmp_s(), [*worker_overrides("8..16"), *worker_overrides("4")]).scaling
    assert (fixed.min_workers, fixed.num_workers, fixed.lanes, fixed.elastic) == (None, 4, 4, False)
    config = apply_overrides(debug_cpu(), [*worker_overrides("1..2"), "scaling.resize_interval_s=5"])
    trainer = torch_trainer(config)
    assert trainer.scaling_config.num_workers == (1, 2) and trainer.scaling_config.elastic_resize_monitor_interval_s == 5
    assert torch_trainer(debug_cpu()).scaling_config.num_workers == 2
    for text, message in (("two", "N or MIN..MAX"), ("3..2", "1 <= MIN <= MAX"), ("0..2", "1 <= MIN <= MAX")):
        with pytest.raises(ValueError, match=message):
            worker_overrides(text)
    with pytest.raises(ValueError, match="scaling.min_workers must be in 1..num_workers"):
        apply_overrides(debug_cpu(), ["scaling.min_workers=3"])
