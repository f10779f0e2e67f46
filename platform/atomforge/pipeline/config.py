"""The preprocessing configuration: graph, split, shard and validation parameters, with JMP defaults."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from atomforge.datasets import dataset_spec
from atomforge.graph import TIE_RULES
from atomforge.schema import SCHEMA_VERSION

FORMATS = ("parquet", "webdataset")
SPLITS = ("train", "val", "test")
DEFAULT_SKIN = 0.5  # Å: positions may move skin/2 before a stored graph needs a rebuild
DEFAULT_EXTRA_NEIGHBORS = 10  # K_store = K + this, room for re-filtering after small displacements


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that determines the shards' content (and so the output's version), plus execution knobs.

    cutoff/skin Å; the stored graph holds pairs within cutoff + skin, at most k_store per atom
    (strict tie rule: lower src, then smaller shift). `split_fractions` (train, val, test) apply by
    hashed group id unless the reader gives an official split in `Structure.info["split"]`.
    """

    corpus: str
    input_url: str
    output_url: str
    cutoff: float
    max_neighbors: int | None
    skin: float = DEFAULT_SKIN
    k_store: int | None = None
    tie_rule: str = "strict"
    formats: tuple[str, ...] = ("parquet",)
    shard_size: int = 10_000
    split_fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
    seed: int = 0
    max_atoms: int = 10_000  # structures above this are quarantined ("too_many_atoms")
    max_abs_force: float = 1_000.0  # eV/Å; beyond it a label is corrupt ("force_out_of_range")
    max_abs_energy_per_atom: float = 10_000.0  # eV/atom ("energy_out_of_range")
    reader_options: dict = field(default_factory=dict)  # JSON-able, never secrets
    num_workers: int = 1  # parallel work-unit tasks (execution only: not part of the fingerprint)

    def __post_init__(self) -> None:
        if self.cutoff <= 0 or self.skin < 0:
            raise ValueError(f"cutoff must be > 0 and skin >= 0, got cutoff={self.cutoff}, skin={self.skin}")
        if self.max_neighbors is not None and self.max_neighbors < 1:
            raise ValueError(f"max_neighbors must be >= 1, got {self.max_neighbors}")
        if self.k_store is None and self.max_neighbors is not None:
            object.__setattr__(self, "k_store", self.max_neighbors + DEFAULT_EXTRA_NEIGHBORS)
        if self.max_neighbors is not None and (self.k_store is None or self.k_store < self.max_neighbors):
            raise ValueError(f"k_store must be >= max_neighbors ({self.max_neighbors}), got {self.k_store}")
        if self.tie_rule not in TIE_RULES:
            raise ValueError(f"tie_rule must be one of {TIE_RULES}, got {self.tie_rule!r}")
        if not self.formats or any(f not in FORMATS for f in self.formats):
            raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {self.formats}")
        if self.shard_size < 1 or self.num_workers < 1:
            raise ValueError(f"shard_size and num_workers must be >= 1, got {self.shard_size}, {self.num_workers}")
        fractions = tuple(float(f) for f in self.split_fractions)
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
            raise ValueError(f"split_fractions must be 3 non-negative numbers summing to 1, got {self.split_fractions}")
        object.__setattr__(self, "split_fractions", fractions)
        object.__setattr__(self, "formats", tuple(sorted(set(self.formats), key=FORMATS.index)))

    @classmethod
    def for_corpus(cls, corpus: str, input_url: str, output_url: str, **overrides) -> PipelineConfig:
        """A config with the corpus's default cutoff and K (its `atomforge.datasets` record's task); None
        overrides are ignored."""
        task = dataset_spec(corpus).task
        values = {"cutoff": task.cutoff, "max_neighbors": task.max_neighbors} | {n: v for n, v in overrides.items() if v is not None}
        return cls(corpus=corpus, input_url=input_url, output_url=output_url, **values)

    def graph_params(self) -> dict:
        """The manifest's `graph` block."""
        return {
            "cutoff": self.cutoff,
            "skin": self.skin,
            "storage_radius": self.cutoff + self.skin,
            "max_neighbors": self.max_neighbors,
            "k_store": self.k_store,
            "tie_rule": self.tie_rule,
            "storage_tie_rule": "strict",
            "ordering": "dst, distance, src, shift",
        }

    def content_params(self) -> dict:
        """Every parameter that changes shard content (execution knobs and the output URL excluded)."""
        params = asdict(self)
        for name in ("output_url", "num_workers"):
            params.pop(name)
        params["schema_version"] = SCHEMA_VERSION
        return params

    @property
    def fingerprint(self) -> str:
        """Hash of `content_params`: names the versioned prefix that holds this config's shards."""
        text = json.dumps(self.content_params(), sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
