"""The GPU check's data: the demo corpora at their smallest size, preprocessed by the pipeline, and run configs on them.

`demo_shards(root)` writes the four pretraining corpora (`jobs/make_demo_corpora.py --size tiny`:
EMT slabs, GFN2-xTB molecules) under root/raw and their published shards under root/shards, in
this process, in about 10 s on one core; both are kept, so a second run with the same root reuses
them. `train_config` is a debug recipe on those shards, set up for one process on one device.
"""

from __future__ import annotations

from pathlib import Path


def demo_shards(root: Path) -> dict[str, str]:
    """task -> dataset URL of the demo shards under `root` (built when absent)."""
    from atomforge.corpora import read_corpus
    from atomforge.corpora.demo import make_demo_corpora
    from atomforge.datasets import PRETRAINING
    from atomforge.pipeline import PipelineConfig, run_pipeline

    raw, shards = root / "raw", root / "shards"
    if not (raw / "demo.json").exists():
        make_demo_corpora(raw, size="tiny", seed=0)
    urls = {}
    for corpus in PRETRAINING:
        out = shards / corpus
        if not (out / "manifest.json").exists():  # the pipeline is a no-op on a finished output anyway
            config = PipelineConfig.for_corpus(corpus, str(raw / corpus), str(out))
            run_pipeline(config, read_corpus(corpus, str(raw / corpus)), backend="local")
        urls[corpus] = str(out)
    return urls


def train_config(recipe, shards: dict[str, str], output: Path, device: str, amp: str = "none",
                 steps: int = 30, *overrides: str):
    """`recipe()` (a debug_* TrainConfig) on the demo shards, one process on `device`, no validation.

    The checkpoint interval is the run's length, so a run writes one checkpoint, at its end.
    """
    from atomforge.recipes.jmp import with_data
    from atomforge.training.overrides import apply_overrides

    return apply_overrides(with_data(recipe(), shards), [
        "scaling.num_workers=0", f"scaling.use_gpu={device == 'cuda'}", f"scaling.amp={amp}",
        f"max_steps={steps}", f"checkpoint.every_steps={steps}", f"checkpoint.output={output}",
        f"log_every={steps}", "val_every=0", "data.val_max_structures=0", *overrides,
    ])


def with_model(config, model, max_atoms: int):
    """`config` with another backbone config and atom budget; every task's graph at the model's cutoff."""
    import dataclasses

    tasks = {name: dataclasses.replace(task, spec=dataclasses.replace(task.spec, cutoff=model.cutoff))
             for name, task in config.data.tasks.items()}
    return dataclasses.replace(config, model=model, data=dataclasses.replace(config.data, tasks=tasks, max_atoms=max_atoms))
