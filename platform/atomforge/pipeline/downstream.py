"""A downstream set (an rMD17 .npz or anything ASE reads) -> shards a fine-tuning run reads, in one call.

    from atomforge.pipeline.downstream import prepare_downstream
    prepare_downstream("rmd17_aspirin.npz", "shards/aspirin")                      # task / dataset "rmd17"
    prepare_downstream("cells.extxyz", "shards/bulk", dataset="bulk_modulus", property_key="bulk_modulus",
                       property_per_atom=True)                                       # a per-structure property
    python pipelines/downstream.py --input rmd17_aspirin.npz --output shards/aspirin   (the same, CLI)

The same pipeline as pretraining corpora (validation, quarantine, stored graphs, manifest with
checksums and statistics), in this process (downstream sets are small), with every structure in one
pool split ("train"): the fine-tuning recipe draws its exact counts from it (`training.config.Subset`,
e.g. rMD17's 950 / 50 / rest, seeded), so one preprocessed set serves every split seed.
"""

from __future__ import annotations

from pathlib import Path

from atomforge.corpora import read_corpus
from atomforge.pipeline.config import PipelineConfig
from atomforge.pipeline.executor import run_pipeline

POOL = (1.0, 0.0, 0.0)  # every structure in the train split: the pool a Subset draws from


def corpus_of(path: str) -> str:
    """"rmd17" for .npz files (or a folder named like one), else "ase"."""
    name = Path(path.rstrip("/")).name
    return "rmd17" if name.endswith(".npz") or "rmd17" in name else "ase"


def prepare_downstream(input_url: str, output_url: str, corpus: str = "auto", *, dataset: str | None = None,
                       property_key: str | None = None, property_per_atom: bool = False, cutoff: float | None = None,
                       max_neighbors: int | None = None, shard_size: int | None = None,
                       storage_options: dict | None = None) -> dict:
    """Preprocess one downstream set into `output_url`; returns its manifest (a no-op when already done).

    corpus: "rmd17", "ase" or "auto" (by suffix). dataset: the dataset (task) name of ASE sets
    (rMD17 sets are "rmd17"). property_key / property_per_atom: a per-structure property as the
    label (`corpora.asefiles`). cutoff Å / max_neighbors: the stored graph (default per corpus; it
    must reach the model's cutoff). Counts reconcile as in every pipeline run (read = written + quarantined).
    """
    corpus = corpus_of(input_url) if corpus == "auto" else corpus
    options: dict = {}
    if corpus == "ase":
        options["dataset"] = dataset or "ase"
        if property_key:
            options |= {"property_key": property_key, "property_per_atom": property_per_atom}
    elif dataset not in (None, "rmd17") or property_key:
        raise ValueError(f"{input_url}: rMD17 sets are dataset 'rmd17' with energies and forces "
                         f"(got dataset={dataset!r}, property_key={property_key!r})")
    config = PipelineConfig.for_corpus(corpus, input_url, output_url, cutoff=cutoff, max_neighbors=max_neighbors,
                                       shard_size=shard_size, split_fractions=POOL, reader_options=options)
    reader = read_corpus(corpus, input_url, **options, **({"storage_options": storage_options} if storage_options else {}))
    return run_pipeline(config, reader, storage_options, backend="local", input_storage_options=storage_options)
