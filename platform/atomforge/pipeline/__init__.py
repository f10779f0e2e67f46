"""Preprocessing: raw corpora -> validated, graphed, split shards (Parquet / WebDataset) + manifest.

Stages (`stages`) are small callables over records; the executor (`executor`) owns work-unit
sharding, resumption and completion markers, and runs either on Ray Data or in-process.
"""

from atomforge.pipeline.config import CORPUS_DEFAULTS, PipelineConfig
from atomforge.pipeline.executor import run_pipeline

__all__ = ["CORPUS_DEFAULTS", "PipelineConfig", "run_pipeline"]
