"""Dataset specs: one record per corpus with everything atomforge knows about it; the pipeline and recipes read it.

    spec = DATASETS["oc20"]
    spec.reader()             # OC20Reader (the class, imported on first call)
    spec.task                 # TaskSpec: default cutoff and K, energy convention, JMP loss scales and
                              # normalisers (until a manifest gives the real statistics), DeNS MD-frame rule
    spec.dens_sigma, spec.dens_noise_weight    # DeNS σ (Å) and λ_D as released for this corpus
    PRETRAINING               # the corpora of JMP's pretraining mix, in JMP's order

`pipelines/preprocess.py` builds each corpus's graphs at its spec's cutoff and K and reads it with its
spec's reader; the pretraining recipes take the task table, the mix and DeNS's per-task σ / λ_D from
here. A dataset without a spec (a fine-tuning set, a user's corpus) is a plain `TaskSpec(name)`.
Values: JMP's published table (CORPORA.md) and DeNS's released configs (OBJECTIVES.md §2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from atomforge.tasks import TaskSpec


@dataclass(frozen=True)
class DatasetSpec:
    """One corpus: how to read it and how it trains.

    reader: returns the corpus's `CorpusReader` class; a function so the reader's module (and its
        format libraries) are imported only by whoever reads raw files.
    task: the corpus's task as a JMP pretraining task: `cutoff` / `max_neighbors` are also the
        pipeline's default graph, `energy_convention` what its reader's energies are.
    dens_sigma: DeNS noise σ in Å; dens_noise_weight: DeNS λ_D (the noise term's loss weight).
    pretraining: part of JMP's pretraining mix.
    """

    name: str
    reader: Callable[[], type]
    task: TaskSpec
    dens_sigma: float = 0.1
    dens_noise_weight: float = 10.0
    pretraining: bool = False

    def __post_init__(self) -> None:
        if self.task.name != self.name:
            raise ValueError(f"dataset {self.name!r}: its task is named {self.task.name!r}")
        if not self.dens_sigma > 0 or self.dens_noise_weight < 0:
            raise ValueError(f"dataset {self.name!r}: dens_sigma must be > 0 and dens_noise_weight >= 0, "
                             f"got {self.dens_sigma}, {self.dens_noise_weight}")


def _ase() -> type:
    from atomforge.corpora.asefiles import AseFilesReader

    return AseFilesReader


def _oc20() -> type:
    from atomforge.corpora.oc20 import OC20Reader

    return OC20Reader


def _oc22() -> type:
    from atomforge.corpora.oc22 import OC22Reader

    return OC22Reader


def _ani1x() -> type:
    from atomforge.corpora.ani1x import ANI1xReader

    return ANI1xReader


def _transition1x() -> type:
    from atomforge.corpora.transition1x import Transition1xReader

    return Transition1xReader


def _rmd17() -> type:
    from atomforge.corpora.rmd17 import RMD17Reader

    return RMD17Reader


# oc20/oc22/ani1x/transition1x: JMP's pretraining tasks (cutoff, K, energy target, force loss scale
# λ_F, energy and force std) and DeNS's OC20 / OC22 settings (σ, λ_D; the OC20/OC22 code never
# corrupts MD frames). rmd17: small molecules (<= 21 atoms) at the molecular 8 Å so K never binds;
# every frame is an MD frame and DeNS's MD17 code corrupts them (σ 0.05 Å, λ_D 5). ase: generic
# materials/molecules, 6 Å and K 30 as in common MLIP defaults (MACE, fairchem S2EF).
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("oc20", _oc20, TaskSpec("oc20", 12.0, 30, "referenced", energy_std=24.90, force_std=0.511,
                                        force_weight=73.0), 0.1, 10.0, pretraining=True),
    DatasetSpec("oc22", _oc22, TaskSpec("oc22", 12.0, 30, "total", energy_std=25.23, force_std=0.257,
                                        force_weight=80.0), 0.15, 25.0, pretraining=True),
    DatasetSpec("ani1x", _ani1x, TaskSpec("ani1x", 8.0, 30, "total", energy_std=2.87, force_std=2.131,
                                          force_weight=15.0), 0.1, 10.0, pretraining=True),
    DatasetSpec("transition1x", _transition1x, TaskSpec("transition1x", 8.0, 30, "total", energy_std=1.79,
                                                        force_std=0.359, force_weight=14.0), 0.1, 10.0,
                pretraining=True),
    DatasetSpec("rmd17", _rmd17, TaskSpec("rmd17", 8.0, 30, "total", dens_md_frames=True), 0.05, 5.0),
    DatasetSpec("ase", _ase, TaskSpec("ase", 6.0, 30, "total")),
)}
PRETRAINING: tuple[str, ...] = tuple(name for name, spec in DATASETS.items() if spec.pretraining)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of corpus `name`; ValueError listing the known corpora otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown corpus {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def task_spec(name: str) -> TaskSpec:
    """The task of dataset `name`: its corpus's where it has a spec, else a default `TaskSpec(name)`."""
    return DATASETS[name].task if name in DATASETS else TaskSpec(name)


def dens_values(field: str, names: Iterable[str] | None = None) -> dict[str, float]:
    """Per-dataset DeNS values, `field` = "dens_sigma" or "dens_noise_weight", for `names` (default: all
    corpora): the mappings `objectives.DeNS(sigma=..., noise_weight=...)` takes."""
    if field not in ("dens_sigma", "dens_noise_weight"):
        raise ValueError(f"field must be 'dens_sigma' or 'dens_noise_weight', got {field!r}")
    return {name: getattr(dataset_spec(name), field) for name in (DATASETS if names is None else names)}
