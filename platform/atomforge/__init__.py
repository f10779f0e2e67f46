"""atomforge: distributed, data-pipeline-first pretraining of atomistic foundation models.

The public API is imported lazily so that `import atomforge` stays cheap in Ray workers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Structure": "atomforge.schema",
    "neighbor_graph": "atomforge.graph",
    "NeighborGraph": "atomforge.graph",
    "collate": "atomforge.batch",
    "atom_budget_batches": "atomforge.batch",
    "read_corpus": "atomforge.corpora",
    "open_shards": "atomforge.shards",
    "load_pretrained": "atomforge.artifacts.reference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'atomforge' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
