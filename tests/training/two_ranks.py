"""One rank of the two-process gloo check of the step loss (run as a script by test_reduction.py).

    python two_ranks.py RANK WORLD STORE_FILE OUT_DIR

Rank r trains on its own slice of `structures()` (unequal sizes), reduces with
`atomforge.training.reduction.reduce_step` and writes its loss, count and gradients to OUT_DIR/r.pt.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from ase.build import molecule
from ase.calculators.emt import EMT
from atomforge.batch import collate
from atomforge.models import AtomisticModel
from atomforge.models.painn import PaiNNConfig
from atomforge.objectives import JMPSupervised, ObjectiveContext, ObjectiveMix
from atomforge.schema import from_ase
from atomforge.tasks import TaskSpec
from atomforge.training.distributed import SingleProcess, TorchDistributed
from atomforge.training.reduction import micro_batch_weight, reduce_step

TASKS = {"mol": TaskSpec("mol", 5.0, energy_std=2.0, force_std=0.5, force_weight=3.0)}
SLICES = ((0, 3), (3, 8))  # rank 0: 3 structures, rank 1: 5


def structures():
    """8 EMT-labelled molecules of different sizes."""
    out = []
    for i, name in enumerate(["H2O", "CH4", "NH3", "CH3OH", "H2O", "C2H6", "CH4", "CH3CH2OH"]):
        atoms = molecule(name)
        atoms.rattle(0.05, seed=i)
        atoms.calc = EMT()
        out.append(from_ase(atoms, f"m{i}", energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=None))
    return out


def loss_and_gradients(items, world: int):
    """(step loss, count, flat gradient) of the seeded model on `items`, reduced over `world` ranks."""
    torch.manual_seed(0)
    model = AtomisticModel(PaiNNConfig.tiny(), TASKS).double()
    batch = collate(items, cutoff=5.0)
    for key in ("pos", "ref_pos", "cell", "shifts", "cand_shifts", "forces", "stress"):
        batch[key] = batch[key].double()
    ctx = ObjectiveContext(torch.Generator().manual_seed(0), TASKS, ["mol"])
    result = ObjectiveMix([(JMPSupervised(), 1.0)], model).run(model, batch, ctx)
    weight = micro_batch_weight(len(items))
    (result.loss * weight).backward()
    dist = TorchDistributed() if world > 1 else SingleProcess()
    loss, count = reduce_step(model, float(result.loss.detach()) * weight, len(items), dist)
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    return loss, count, grads, float(result.loss.detach())


def main(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    start, stop = SLICES[rank]
    loss, count, grads, local = loss_and_gradients(structures()[start:stop], world)
    torch.save({"loss": loss, "count": count, "grads": grads, "local_loss": local}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
