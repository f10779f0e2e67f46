"""Part 5: a model trained on the device, exported, loaded in a CPU-only process: same weights, same predictions.

A short run (debug_cpu on the demo shards, bf16 on CUDA) writes its checkpoint as a GPU run does
(`Trainer.save`: CUDA tensors saved, read back with map_location="cpu"); `load_model` + `export`
write the export folder; a child process with CUDA_VISIBLE_DEVICES="" (a machine without a GPU)
loads it with `load_pretrained` and predicts every task's first structures through the ASE
calculator. Checks: the export's safetensors equal the checkpoint's EMA weights bit for bit; the
CPU process's energies and forces equal the checkpoint model's on the device, exactly when the
device is the CPU, and to float32 kernel rounding on a GPU (|Δ| <= ATOL + RTOL·|value|: other
summation orders in the GPU kernels, no TF32 in torch's default fp32 matmuls).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from gpu.data import train_config
from gpu.harness import Recorder, Setup

TITLE = "5. export from a device run, load on a CPU-only process"
COLUMNS = ("structures", "weights_identical", "max_energy_diff_ev", "max_force_diff_ev_a", "within_tolerance")
SHARE = 1.5  # two processes start: the part and its CPU-only loader
ATOL, RTOL = 1e-4, 1e-5  # eV or eV/Å, relative
STRUCTURES_PER_TASK, STEPS = 4, 5


def predictions(ref: str, shards: dict[str, str], device: str) -> dict[str, np.ndarray]:
    """'<task>/<i>/energy' (eV) and '.../forces' (eV/Å) of the model `ref` names, run on `device`."""
    from ase import Atoms
    from atomforge.artifacts.reference import load_pretrained
    from atomforge.schema import from_row
    from atomforge.shards import open_shards

    model, out = load_pretrained(ref), {}
    for task, url in shards.items():
        calculator = model.calculator(task=task, device=device)
        rows = open_shards(url).table("train").slice(0, STRUCTURES_PER_TASK).to_pylist()
        for i, row in enumerate(rows):
            structure = from_row(row)
            atoms = Atoms(numbers=structure.atomic_numbers, positions=structure.positions, pbc=structure.pbc,
                          cell=structure.cell if structure.cell is not None else None)
            atoms.calc = calculator
            out[f"{task}/{i}/energy"] = np.array(atoms.get_potential_energy())
            out[f"{task}/{i}/forces"] = atoms.get_forces()
    return out


def cpu_predictions(export_dir: Path, shards: dict[str, str], work: Path) -> dict[str, np.ndarray]:
    """`predictions` of the export in a child process that sees no GPU."""
    out = work / "cpu_predictions.npz"
    cmd = [sys.executable, "-m", "gpu.roundtrip", "--predict", str(export_dir), "--shards", json.dumps(shards),
           "--out", str(out)]
    repo = Path(__file__).resolve().parents[2]
    path = os.pathsep.join(filter(None, [str(repo / "platform"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": path}
    result = subprocess.run(cmd, cwd=repo / "benchmarks", env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"CPU-only process failed: {result.stderr.strip().splitlines()[-1:]}")
    with np.load(out) as data:
        return dict(data)


def same_weights(export_dir: Path, run_dir: Path) -> bool:
    """The export's weights equal the checkpoint's EMA weights bit for bit."""
    import torch
    from atomforge.artifacts.checkpoint import latest_checkpoint, read_state
    from atomforge.artifacts.reference import model_weights
    from safetensors.torch import load_file

    exported = load_file(str(export_dir / "model.safetensors"))
    trained, _ = model_weights(read_state(Path(latest_checkpoint(str(run_dir)))), use_ema=True)
    return exported.keys() == trained.keys() and all(torch.equal(exported[k], trained[k].cpu()) for k in exported)


def run(setup: Setup, record: Recorder) -> None:
    from atomforge.artifacts.export import export
    from atomforge.artifacts.reference import load_model
    from atomforge.recipes.jmp import debug_cpu
    from atomforge.training.build import build_trainer
    from atomforge.training.launch import process_device

    if not record.fits("train-export-load", 20.0):
        return
    with record.case("train-export-load") as case:
        run_dir, export_dir = setup.work / "export" / "run", setup.work / "export" / "export"
        config = train_config(debug_cpu, setup.shards, run_dir, setup.device, "bf16" if setup.cuda else "none",
                              2 if setup.tiny else STEPS)
        build_trainer(config, device=process_device(config)).fit()
        export(load_model(str(run_dir)), str(export_dir))
        case.metrics["weights_identical"] = same_weights(export_dir, run_dir)
        on_device = predictions(str(run_dir), dict(setup.shards), setup.device)
        on_cpu = cpu_predictions(export_dir, dict(setup.shards), setup.work / "export")
        compare(case, on_device, on_cpu, exact=not setup.cuda)


def compare(case, on_device: dict, on_cpu: dict, exact: bool) -> None:
    if on_device.keys() != on_cpu.keys():
        case.fail(f"the CPU process predicted {len(on_cpu)} quantities, the device {len(on_device)}")
        return
    diff = {kind: max(float(np.abs(on_device[k] - on_cpu[k]).max()) for k in on_device if k.endswith(kind))
            for kind in ("energy", "forces")}
    close = all(np.allclose(on_cpu[k], on_device[k], rtol=0 if exact else RTOL, atol=0 if exact else ATOL)
                for k in on_device)
    case.metrics.update(structures=len(on_device) // 2, max_energy_diff_ev=diff["energy"],
                        max_force_diff_ev_a=diff["forces"], within_tolerance=close)
    if not case.metrics["weights_identical"]:
        case.fail("the export's weights differ from the trained (EMA) weights")
    if not close:
        case.fail(f"CPU predictions differ from the device's beyond {'0 (same device)' if exact else f'atol {ATOL}, rtol {RTOL}'}")


def main() -> None:
    """The CPU-only child: predictions of an export, saved as .npz."""
    parser = argparse.ArgumentParser(description="predictions of an export on the CPU (gpu_check part 5)")
    parser.add_argument("--predict", required=True)
    parser.add_argument("--shards", required=True, help="JSON: task -> dataset URL")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import torch

    assert not torch.cuda.is_available(), "the CPU-only process sees a CUDA device"
    np.savez(args.out, **predictions(args.predict, json.loads(args.shards), "cpu"))


if __name__ == "__main__":
    main()
