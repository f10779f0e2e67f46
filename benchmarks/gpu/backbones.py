"""Part 3: forward+backward time and peak memory of every backbone preset, eager and torch.compile.

Backbones are discovered, not listed: every `*Config` class in any module of `atomforge.models`
with `tiny`, `small` and `large` presets and `build` (so a new backbone is measured without
touching this file). Batches: copies of four EMT-labelled Cu(111) slabs with an adsorbate (37
atoms each) up to 512 / 2,048 / 8,192 atoms, each graph built at the preset's cutoff with K = 30,
or the preset's own `max_neighbors` where it has one (GemNet-OC takes its sub-graphs from a K = 1000
graph).
One step = the JMP supervised objective (energy + direct or gradient forces, one task) + backward.
Compile = `torch.compile` of the backbone module (inductor on CUDA; at tiny sizes the aot_eager
backend, which traces as on the GPU but generates no code, to stay cheap). Time: median of the
timed steps after warm-up, synchronised (at tiny sizes one of each); memory:
`torch.cuda.max_memory_allocated` over the timed steps (the process's peak: this preset's model and
gradients, the batch, a few cached batches; CUDA only: a CPU process's peak RSS never falls, so it
cannot be read per case; see benchmarks/models.py for that, one process per configuration). Cases
run in priority order (every backbone's small preset at 2,048 atoms first) until the time box ends;
at tiny sizes only TINY_COMPILED is compiled (a fixed choice, so the CPU run is the same every
time; that the e3nn backbone traces is tests/models/test_compile.py's check).
"""

from __future__ import annotations

import copy
import functools
import importlib
import pkgutil
import statistics
import time

from gpu.harness import Recorder, Setup

TITLE = "3. backbone presets: forward+backward of the JMP objective"
COLUMNS = ("params", "atoms", "edges", "ms_per_step", "peak_mib", "compile_s")
SHARE = 3.0
GPU_ATOMS, TINY_ATOMS = (512, 2048, 8192), (64,)
FORCES = ("direct", "gradient")
MAX_NEIGHBORS = 30
WARMUP, STEPS = 2, 5  # at tiny sizes 1 and 1
TINY_COMPILED = "painn"  # the cheapest to compile (about 4 s on a CPU)
DOUBLE_BACKWARD = "double backward"  # torch.compile's AOTAutograd error for create_graph through a compiled graph


def backbone_configs() -> dict[str, type]:
    """name -> config class of every backbone with tiny/small/large presets in atomforge.models."""
    import atomforge.models as models

    found = {}
    for info in pkgutil.walk_packages(models.__path__, "atomforge.models."):
        module = importlib.import_module(info.name)
        for name, cls in vars(module).items():
            if (isinstance(cls, type) and name.endswith("Config") and cls.__module__ == module.__name__
                    and all(callable(getattr(cls, attr, None)) for attr in ("tiny", "small", "large", "build"))):
                found[name.removesuffix("Config").lower()] = cls
    return dict(sorted(found.items()))


def base_graphs(cutoff: float, max_neighbors: int) -> list:
    """Four slab graphs (Data) at `cutoff` Å and K = `max_neighbors`, with EMT labels."""
    from ase.build import add_adsorbate, fcc111
    from ase.calculators.emt import EMT
    from atomforge.batch import structure_data
    from atomforge.schema import Structure

    graphs = []
    for i, adsorbate in enumerate(("O", "H", "N", "C")):
        atoms = fcc111("Cu", (3, 3, 4), vacuum=6.0)
        add_adsorbate(atoms, adsorbate, 1.6, "fcc")
        atoms.rattle(0.05, seed=i)
        atoms.calc = EMT()
        structure = Structure(f"slab{i}", atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                              energy=float(atoms.get_potential_energy()), forces=atoms.get_forces())
        graphs.append(structure_data(structure, cutoff, max_neighbors, task=0))
    return graphs


def batch_of(graphs: list, atoms: int, device: str):
    from torch_geometric.data import Batch

    copies = max(1, round(atoms / graphs[0].num_nodes))
    return Batch.from_data_list([graphs[i % len(graphs)] for i in range(copies)]).to(device)


def cases(names: list[str], tiny: bool) -> list[tuple[str, str, int, str, str]]:
    """(backbone, preset, atoms, forces, mode) in priority order: on a GPU every backbone's small preset
    at 2,048 atoms (eager, then compiled) first; at tiny sizes every eager case, then the compiled ones."""
    presets, sizes = (("tiny",), TINY_ATOMS) if tiny else (("tiny", "small", "large"), GPU_ATOMS)
    grid = [(b, p, a, f, m) for m in ("eager", "compile") for b in names for p in presets for a in sizes for f in FORCES]
    if tiny:
        return grid
    first = [(b, "small", 2048, f, m) for b in names for m in ("eager", "compile") for f in FORCES]
    return first + [c for c in grid if c not in first]


def timed_steps(model, batch, forces: str, device: str, warmup: int, steps: int
                ) -> tuple[list[float], float | None, float]:
    """(seconds per timed step, peak MiB on CUDA or None, seconds of the warm-up steps)."""
    import torch
    from atomforge.datasets import task_spec
    from atomforge.objectives import JMPSupervised, ObjectiveContext

    objective, times, warm = JMPSupervised(forces=forces), [], time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            warm = time.perf_counter() - warm
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
        ctx = ObjectiveContext(torch.Generator(device).manual_seed(step), {n: task_spec(n) for n in model.tasks}, model.tasks)
        started = time.perf_counter()
        loss = objective.run(model, batch, ctx).loss + model.ddp_anchor()
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return times[warmup:], peak, warm


@functools.lru_cache(maxsize=1)  # cases of one preset run in a row; one model resident at a time
def built_model(config_cls, preset: str, device: str):
    """The preset's model on `device`, built once for its cases (e3nn generates code when built)."""
    import torch
    from atomforge.models import AtomisticModel

    torch.manual_seed(0)
    return AtomisticModel(getattr(config_cls, preset)(), tasks=("oc20",)).to(device).train()


@functools.lru_cache(maxsize=6)
def built_batch(cutoff: float, max_neighbors: int, atoms: int, device: str):
    return batch_of(base_graphs(cutoff, max_neighbors), atoms, device)


def measure(case, config_cls, preset: str, atoms: int, forces: str, mode: str, setup: Setup) -> None:
    import torch
    import torch._dynamo

    model = built_model(config_cls, preset, setup.device)
    config = model.backbone_config  # a backbone that takes a wider graph than K = 30 says so (GemNet-OC: 1000)
    batch = built_batch(float(config.cutoff), int(getattr(config, "max_neighbors", MAX_NEIGHBORS)), atoms, setup.device)
    case.metrics.update(params=sum(p.numel() for p in model.parameters()), atoms=int(batch.num_nodes),
                        edges=int(batch.edge_index.shape[1]))
    if mode == "compile":
        torch._dynamo.reset()
        model = copy.deepcopy(model)
        model.backbone = torch.compile(model.backbone, backend="inductor" if setup.cuda else "aot_eager")
    try:
        times, peak, warm = timed_steps(model, batch, forces, setup.device, *((1, 1) if setup.tiny else (WARMUP, STEPS)))
    except Exception as error:
        if mode == "compile" and DOUBLE_BACKWARD in str(error):
            case.note = ("not supported: torch.compile (AOTAutograd) cannot backpropagate through the gradient "
                         "of a compiled graph (create_graph); gradient-force training runs eager")
            return
        raise
    case.metrics.update(ms_per_step=1000 * statistics.median(times), peak_mib=peak)
    if mode == "compile":
        case.metrics["compile_s"] = warm
    if not setup.cuda:
        case.note = "CPU: peak memory not measured per case (a process's peak RSS never falls)"


def run(setup: Setup, record: Recorder) -> None:
    import torch

    configs = backbone_configs()
    estimate = {"eager": 3.0, "compile": 20.0}
    for backbone, preset, atoms, forces, mode in cases(list(configs), setup.tiny):
        name = f"{backbone}/{preset}/{atoms}/{forces}/{mode}"
        if setup.tiny and mode == "compile" and backbone != TINY_COMPILED:
            record.skip(name, f"tiny sizes compile {TINY_COMPILED} only; a GPU run compiles every one")
            continue
        if not record.fits(name, estimate[mode]):
            continue
        started = time.perf_counter()
        with record.case(name) as case:
            measure(case, configs[backbone], preset, atoms, forces, mode, setup)
        estimate[mode] = max(estimate[mode] * 0.5, time.perf_counter() - started)
        if setup.cuda:
            torch.cuda.empty_cache()
