"""Backbone cost: forward+backward time and peak memory per training step, and DeNS / SCD overhead.

For each backbone (PaiNN, e3nn, GemNet-OC) and size preset (tiny, small, large), on an OC20-like batch
(4 Cu slabs with an adsorbate, 6 Å / 30 neighbours) and a molecule batch (16 small organics, 5 Å /
30), one "step" is objective.run + backward for JMP supervised (direct forces), DeNS (p = 1, so every
step pays the corruption and force encoding) and SCD (two passes). Each configuration runs in a fresh
subprocess so its peak RSS (CPU) or max_memory_allocated (CUDA) is its own. Every backbone sees the
same batch graph (a backbone with a smaller cutoff drops the longer edges; GemNet-OC derives its
sub-graphs from it). GemNet-OC small on CPU takes minutes per step, so by default it runs the OC20
batch under JMP only, one timed step; the comparison table gives GemNet-OC / PaiNN-small ratios
measured in the same run (the numbers to quote on a shared machine).

GPU section: when CUDA is present (and --device is cpu), the JMP step on the OC20 batch for PaiNN
small and GemNet-OC tiny / small / large also runs on the GPU; without CUDA it is skipped, saying so.

    python benchmarks/models.py [--device cpu|cuda] [--threads 1] [--steps 3] [--sizes tiny small large]
                                [--backbones painn e3nn gemnet] [--batches oc20 molecules]
                                [--objectives jmp dens scd] [--json bench_out/models.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

BACKBONES = ("painn", "e3nn", "gemnet")
SIZES = ("tiny", "small", "large")
BATCHES = ("oc20", "molecules")
OBJECTIVES = ("jmp", "dens", "scd")
SKIN, K_STORE, MAX_NEIGHBORS = 1.0, 40, 30  # Å, stored and used neighbours per atom


def build_batch(kind: str):
    from ase.build import add_adsorbate, fcc111, molecule
    from ase.calculators.emt import EMT
    from atomforge.batch import collate, regraph
    from atomforge.schema import Structure

    items = []
    if kind == "oc20":
        for i, ads in enumerate(("O", "H", "N", "C")):
            atoms = fcc111("Cu", (3, 3, 4), vacuum=6.0)
            add_adsorbate(atoms, ads, 1.6, "fcc")
            atoms.rattle(0.05, seed=i)
            items.append(atoms)
        cutoff, task = 6.0, 0
    else:
        names = ("CH3CH2OH", "C6H6", "CH3COOH", "H2O", "CH4", "C2H6", "CH3OH", "NH3") * 2
        items = [molecule(n) for n in names]
        cutoff, task = 5.0, 1
    structures = []
    for i, atoms in enumerate(items):
        atoms.calc = EMT()
        fixed = atoms.positions[:, 2] < atoms.positions[:, 2].min() + 3.0 if kind == "oc20" else None
        structures.append(Structure(f"{kind}{i}", atoms.numbers, atoms.positions, atoms.cell.array if atoms.pbc.any() else None,
                                    atoms.pbc, energy=float(atoms.get_potential_energy()), forces=atoms.get_forces(), fixed=fixed))
    # As shards store graphs: candidates at cutoff + skin and K_store neighbours, re-filtered to
    # (cutoff, K) with `regraph`, so corrupted views re-filter instead of rebuilding.
    batch = collate(structures, cutoff=cutoff + SKIN, max_neighbors=K_STORE, tasks=[task] * len(structures))
    batch.cutoff.fill_(cutoff)
    batch.max_neighbors.fill_(MAX_NEIGHBORS)
    batch.edge_index, batch.shifts = regraph(batch, batch.pos, SKIN, K_STORE)
    return batch


def measure_one(backbone: str, size: str, batch_kind: str, objective: str, steps: int, device: str) -> dict:
    import torch
    from atomforge.datasets import task_spec
    from atomforge.models import AtomisticModel
    from atomforge.models.equivariant import EquivariantConfig
    from atomforge.models.gemnet_oc import GemNetOCConfig
    from atomforge.models.painn import PaiNNConfig
    from atomforge.objectives import SCD, DeNS, JMPSupervised, ObjectiveContext

    config = getattr({"painn": PaiNNConfig, "e3nn": EquivariantConfig, "gemnet": GemNetOCConfig}[backbone], size)()
    model = AtomisticModel(config, tasks=("oc20", "ani1x")).to(device)
    batch = build_batch(batch_kind).to(device)
    obj = {"jmp": JMPSupervised(), "dens": DeNS(probability=1.0), "scd": SCD()}[objective]
    times = []
    for step in range(steps + 1):  # the first step warms up (allocator, e3nn code generation)
        ctx = ObjectiveContext(torch.Generator().manual_seed(step), {n: task_spec(n) for n in model.tasks}, model.tasks, skin=SKIN, k_store=K_STORE)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = obj.run(model, batch, ctx).loss + model.ddp_anchor()
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"backbone": backbone, "size": size, "batch": batch_kind, "objective": objective,
            "params": sum(p.numel() for p in model.parameters()), "atoms": int(batch.num_nodes),
            "edges": int(batch.edge_index.shape[1]), "ms_per_step": 1000 * sorted(times[1:])[len(times[1:]) // 2],
            "peak_mib": peak}


def baseline_rss_mib() -> float:
    """Peak RSS of a process that imported everything but ran nothing (subtract from CPU peaks)."""
    code = ("import resource, torch, e3nn, torch_geometric, atomforge.models, atomforge.objectives;"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def run_child(args, backbone, size, batch_kind, objective, steps=None, device=None) -> dict:
    steps, device = steps or args.steps, device or args.device
    cmd = [sys.executable, __file__, "--child", backbone, size, batch_kind, objective, "--steps", str(steps),
           "--device", device, "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{backbone}/{size}/{batch_kind}/{objective} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def plan(args) -> list[tuple[str, str, str, str, int]]:
    """(backbone, size, batch, objective, steps) to run: the full grid, except GemNet-OC beyond tiny
    (OC20 batch, JMP only, one timed step: a CPU step of JMP-S size takes minutes)."""
    runs = []
    for backbone in args.backbones:
        for size in args.sizes:
            heavy = backbone == "gemnet" and size != "tiny"
            if heavy and (args.device == "cpu" and size == "large"):
                continue  # JMP-L on a CPU: hours per step
            for batch_kind in [b for b in (("oc20",) if heavy else BATCHES) if b in args.batches]:
                objectives = [o for o in (("jmp",) if heavy else OBJECTIVES) if o in args.objectives]
                runs += [(backbone, size, batch_kind, o, 1 if heavy else args.steps) for o in objectives]
    return runs


def print_table(rows: list[dict], baseline: float, device: str) -> None:
    jmp = {(r["backbone"], r["size"], r["batch"]): r for r in rows if r["objective"] == "jmp"}
    extra = {(r["backbone"], r["size"], r["batch"], r["objective"]): r for r in rows}
    mem = "peak MiB (CUDA)" if device == "cuda" else f"peak RSS MiB - {baseline:.0f} baseline"
    print(f"{'backbone':8} {'size':6} {'batch':10} {'params':>9} {'atoms':>6} {'edges':>6} {'JMP ms':>9} "
          f"{mem:>26} {'DeNS x':>7} {'SCD x':>7}")
    for key, r in jmp.items():
        dens, scd = extra.get((*key, "dens")), extra.get((*key, "scd"))
        peak = r["peak_mib"] - (0 if device == "cuda" else baseline)
        print(f"{key[0]:8} {key[1]:6} {key[2]:10} {r['params']:>9,} {r['atoms']:>6} {r['edges']:>6} {r['ms_per_step']:>9.1f} "
              f"{peak:>26.0f} {dens['ms_per_step'] / r['ms_per_step'] if dens else float('nan'):>7.2f} "
              f"{scd['ms_per_step'] / r['ms_per_step'] if scd else float('nan'):>7.2f}")


def print_ratios(rows: list[dict], baseline: float, device: str) -> None:
    """GemNet-OC against PaiNN small on the OC20 batch (JMP step): time and peak-memory ratios."""
    key = {(r["backbone"], r["size"], r["batch"], r["objective"]): r for r in rows}
    ref = key.get(("painn", "small", "oc20", "jmp"))
    gem = [r for r in rows if r["backbone"] == "gemnet" and r["batch"] == "oc20" and r["objective"] == "jmp"]
    if ref is None or not gem:
        return
    offset = 0 if device == "cuda" else baseline
    print(f"\nGemNet-OC / PaiNN small, OC20 batch, JMP step ({device}; PaiNN {ref['ms_per_step']:.0f} ms, "
          f"{ref['peak_mib'] - offset:.0f} MiB):")
    for r in gem:
        print(f"  gemnet {r['size']:6} {r['params']:>12,} params  time x{r['ms_per_step'] / ref['ms_per_step']:7.1f}  "
              f"peak x{(r['peak_mib'] - offset) / max(ref['peak_mib'] - offset, 1.0):6.1f}")


def gpu_section(args) -> list[dict]:
    """PaiNN small and GemNet-OC tiny / small / large on the GPU (OC20 batch, JMP), or [] without CUDA."""
    import torch

    if args.device == "cuda" or not torch.cuda.is_available():
        if args.device == "cpu":
            print("\nGPU section: skipped (no CUDA device)")
        return []
    runs = [("painn", "small")] + [("gemnet", size) for size in SIZES]
    rows = [run_child(args, b, s, "oc20", "jmp", device="cuda") for b, s in runs]
    print("\nGPU section (CUDA):")
    print_table(rows, 0.0, "cuda")
    print_ratios(rows, 0.0, "cuda")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=4, metavar=("BACKBONE", "SIZE", "BATCH", "OBJECTIVE"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared box)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--batches", nargs="+", default=list(BATCHES), choices=BATCHES)
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--json", default="bench_out/models.json")
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure_one(*args.child, steps=args.steps, device=args.device)))
        return
    baseline = baseline_rss_mib()
    rows = [run_child(args, b, s, k, o, steps=n) for b, s, k, o, n in plan(args)]
    print_table(rows, baseline, args.device)
    print_ratios(rows, baseline, args.device)
    gpu_rows = gpu_section(args)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"device": args.device, "threads": args.threads, "steps": args.steps,
                                             "baseline_rss_mib": baseline, "rows": rows, "gpu_rows": gpu_rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
