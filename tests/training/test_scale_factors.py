"""GemNet-OC's scale factors in the trainer: fitted once on rank 0's first batch before step 1, the same on every
rank and in the EMA copy, stored in checkpoints, kept (not refitted) on resume and when fine-tuning."""

from __future__ import annotations

import torch
from atomforge.artifacts.checkpoint import read_state
from atomforge.models.gemnet_oc.layers import ScaleFactor
from atomforge.recipes.jmp import debug_gemnet, only_tasks, with_data
from atomforge.training.build import build_trainer
from atomforge.training.checkpoints import RunDirectory
from atomforge.training.distributed import ThreadGroup, run_ranks
from atomforge.training.initialization import scale_factors_unfitted
from atomforge.training.launch import write_resolved_config
from atomforge.training.overrides import apply_overrides

TASKS = ("oc20", "ani1x")


def gemnet_config(tiny_shards, output, *overrides):
    config = only_tasks(with_data(debug_gemnet(), tiny_shards), TASKS)
    return apply_overrides(config, ["scaling.num_workers=0", f"checkpoint.output={output}", "max_steps=1",
                                    "checkpoint.every_steps=1", "log_every=1", "val_every=0", "data.max_atoms=96",
                                    "optim.warmup_steps=1", *overrides])


def scales(module: torch.nn.Module) -> dict[str, float]:
    return {name: float(m.scale) for name, m in module.named_modules() if isinstance(m, ScaleFactor)}


def fit_ranks(config, world: int):
    config = apply_overrides(config, [f"scaling.num_workers={world}"])  # a global batch of `world` lanes
    write_resolved_config(config)
    group = ThreadGroup(world)
    sink = RunDirectory(config.checkpoint.output, config.checkpoint.num_to_keep)
    trainers = [build_trainer(config, rank, sink) for rank in group.ranks()]
    assert all(scale_factors_unfitted(t.model) for t in trainers)  # fresh backbones: every factor 1.0
    run_ranks(group, lambda rank: trainers[rank.rank].fit())
    return trainers


def test_factors_fitted_once_equal_on_every_rank_and_kept_on_resume(tiny_shards, tmp_path):
    output = tmp_path / "run"
    trainers = fit_ranks(gemnet_config(tiny_shards, output), world=2)
    fitted = scales(trainers[0].model)
    assert len(fitted) == 2 * 11 + 3 * 2 and all(v != 1.0 for v in fitted.values())
    assert scales(trainers[1].model) == fitted  # rank 1 trains rank 0's factors
    assert scales(trainers[0].ema.module) == fitted  # the EMA copy was taken after the fit
    saved = read_state(output / "checkpoint_00000001")["model"]
    assert {k[: -len(".scale")]: float(v) for k, v in saved.items() if k.endswith(".scale")} == fitted

    resumed = fit_ranks(gemnet_config(tiny_shards, output, "max_steps=2"), world=2)
    # A refit would draw step 2's batches, not step 1's, and give other factors.
    assert resumed[0].step == 2 and scales(resumed[0].model) == scales(resumed[1].model) == fitted


def test_factors_of_pretrained_weights_are_not_refitted(tiny_shards, tmp_path):
    pretrained = tmp_path / "pretrain"
    fitted = scales(fit_ranks(gemnet_config(tiny_shards, pretrained), world=1)[0].model)
    config = gemnet_config(tiny_shards, tmp_path / "ft", f"init.source={pretrained}", "init.keep_heads=True")
    write_resolved_config(config)
    trainer = build_trainer(config)
    assert scales(trainer.model) == fitted and not scale_factors_unfitted(trainer.model)
    trainer.fit()
    assert scales(trainer.model) == fitted
