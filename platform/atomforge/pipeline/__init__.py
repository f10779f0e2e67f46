"""Preprocessing: raw corpora -> validated, graphed, split shards (Parquet / WebDataset) + manifest.

Stages (`stages`) are small callables over records; the executor (`executor`) owns work-unit
sharding, resumption and completion markers, and runs either on Ray Data or in-process.
"""

from atomforge.pipeline.config import PipelineConfig
from atomforge.pipeline.executor import run_pipeline

__all__ = ["PipelineConfig", "run_pipeline"]
