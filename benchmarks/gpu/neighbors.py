"""Part 4: the preprocessing graph stage with vesin-torch on the device against vesin on the CPU.

The stage is `search_graph(positions, cell, pbc, cutoff + skin, K_store, "strict")` (what
pipeline.columnar calls per structure) at each corpus's pipeline defaults (PipelineConfig.for_corpus:
12 Å for OC20/OC22, 8 Å for molecules, K_store 40, 0.5 Å skin). `device=` moves only the candidate search to vesin-torch (its CUDA kernel on a GPU);
filtering, ordering and truncation stay the project's (atomforge.graph), so the two must give
identical edge_index and shifts arrays, structure by structure. Structures: every row of the demo
shards (what the pipeline wrote), then periodic Cu bulk cells of 2,048 and 8,192 atoms at 6 Å /
K 30 for the timing that matters on a GPU (at tiny sizes: the demo rows and one 256-atom cell,
vesin-torch on the CPU). Times are per pass over a case's structures, the better of two passes
after one warm-up structure; device times include the copies to and from the device.
"""

from __future__ import annotations

import time

import numpy as np
from gpu.harness import Recorder, Setup

TITLE = "4. graph stage: vesin-torch on the device vs vesin on the CPU"
COLUMNS = ("structures", "atoms", "edges", "identical", "cpu_ms", "device_ms", "cpu_over_device")
SHARE = 1.0
GPU_BULK, TINY_BULK = (2048, 8192), (256,)
SKIN, K_STORE, BULK_CUTOFF, BULK_K = 0.5, 40, 6.0, 30


def demo_cases(shards: dict[str, str]) -> dict[str, tuple[list, dict]]:
    """corpus -> (its shard rows' structures, the pipeline's graph parameters for it)."""
    from atomforge.pipeline import PipelineConfig
    from atomforge.schema import from_row
    from atomforge.shards import open_shards

    out = {}
    for corpus, url in shards.items():
        shard_set = open_shards(url)
        structures = [from_row(row) for split in ("train", "val", "test") for row in shard_set.table(split).to_pylist()]
        config = PipelineConfig.for_corpus(corpus, "unused", url)
        out[f"demo/{corpus}"] = (structures, {"cutoff": config.cutoff, "max_neighbors": config.k_store,
                                              "skin": config.skin})
    return out


def bulk(num_atoms: int):
    """A rattled periodic Cu fcc cell of about `num_atoms` atoms (4 per cubic cell)."""
    from ase.build import bulk as ase_bulk
    from atomforge.schema import Structure

    repeat = max(1, round((num_atoms / 4) ** (1 / 3)))
    atoms = ase_bulk("Cu", "fcc", a=3.6, cubic=True).repeat((repeat,) * 3)
    atoms.rattle(0.05, seed=repeat)
    return Structure(f"cu{len(atoms)}", atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)


def graphs(structures: list, params: dict, device) -> list:
    """The stage's call (pipeline.columnar): one search per structure at cutoff + skin, K_store, strict."""
    from atomforge.graph import search_graph

    radius = params["cutoff"] + params["skin"]
    return [search_graph(s.positions, s.cell, s.pbc, radius, params["max_neighbors"], "strict", device).graph
            for s in structures]


def best_pass(structures: list, params: dict, device) -> tuple[float, list]:
    """(seconds of the faster of two passes, the graphs of the last pass)."""
    best, built = float("inf"), []
    for _ in range(2):
        started = time.perf_counter()
        built = graphs(structures, params, device)
        best = min(best, time.perf_counter() - started)
    return best, built


def compare(case, structures: list, params: dict, device: str) -> None:
    graphs(structures[:1], params, device)  # warm-up: CUDA context, vesin's kernels
    cpu_s, expected = best_pass(structures, params, None)
    device_s, got = best_pass(structures, params, device)
    differ = [s.system_id for s, a, b in zip(structures, expected, got)
              if not (np.array_equal(a.edge_index, b.edge_index) and np.array_equal(a.shifts, b.shifts))]
    case.metrics.update(structures=len(structures), atoms=sum(s.num_atoms for s in structures),
                        edges=sum(g.num_edges for g in expected), identical=not differ, cpu_ms=1000 * cpu_s,
                        device_ms=1000 * device_s, cpu_over_device=cpu_s / device_s)
    if differ:
        case.fail(f"{len(differ)} structures' edges differ, first {differ[0]}")


def run(setup: Setup, record: Recorder) -> None:
    try:
        import vesin_torch
    except ImportError:
        record.skip("all", "vesin-torch is not installed (pip install 'atomforge[gpu]')")
        return
    cases = demo_cases(dict(setup.shards))
    bulk_params = {"cutoff": BULK_CUTOFF, "max_neighbors": BULK_K, "skin": SKIN}
    for num_atoms in TINY_BULK if setup.tiny else GPU_BULK:
        cases[f"bulk/{num_atoms}"] = ([bulk(num_atoms)], bulk_params)
    for name, (structures, params) in cases.items():
        if not record.fits(name, 5.0):
            continue
        with record.case(name) as case:
            compare(case, structures, params, setup.device)
            case.note = f"vesin-torch {vesin_torch.__version__} on {setup.device}; {params}"
