"""Per-task heads evaluated together equal each task's head on its own atoms, and read nothing back to the host."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from ase.build import molecule

TASKS = ("oc20", "ani1x", "transition1x")
LAYOUTS = {  # task id of each structure in the batch
    "interleaved, one task absent": [0, 2, 0, 2],
    "one task": [1, 1, 1],
    "every task, interleaved": [2, 0, 1, 0, 2, 1],
}


def loop_over_tasks(heads, atom_task, *features):
    """What TaskHeads replaced: each present task's head on its own atoms (a host sync per step)."""
    modules, out = list(heads.values()), None
    for t in torch.unique(atom_task).tolist():
        idx = torch.nonzero(atom_task == t).squeeze(1)
        value = modules[t](*(f[idx] for f in features))
        out = value.new_zeros((atom_task.shape[0], *value.shape[1:])) if out is None else out
        out = out.index_put((idx,), value)
    return out


def looped(model):
    """A copy of `model` whose energy and force heads run as the per-task loop."""
    reference = copy.deepcopy(model)
    for heads in (reference.energy_heads, reference.force_heads):
        heads.forward = functools.partial(loop_over_tasks, heads)
    return reference


def structures(kit):
    atoms = [kit.ethanol(), kit.slab(), molecule("H2O"), kit.cu_bulk(), molecule("CH4"), molecule("NH3")]
    return [kit.labelled(a, f"s{i}") for i, a in enumerate(atoms)]


def gradients(model, out) -> dict[str, torch.Tensor]:
    loss = out.energy.sum() + (out.forces**2).sum() + (0.0 if out.stress is None else out.stress.sum())
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params.items(), grads, strict=True)}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("forces", ["direct", "gradient"])
def test_heads_together_equal_the_loop_over_tasks(kit, layout, forces):
    tasks = LAYOUTS[layout]
    model = kit.make_model("painn", double=True, tasks=TASKS).train()  # train: gradient forces keep their graph
    reference = looped(model)
    batch = kit.make_batch(structures(kit)[: len(tasks)], tasks=tasks, double=True)
    out, expected = model(batch, forces=forces, stress=True), reference(batch, forces=forces, stress=True)
    exact = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.energy, expected.energy, **exact)
    torch.testing.assert_close(out.forces, expected.forces, **exact)
    torch.testing.assert_close(out.stress, expected.stress, **exact)
    grads, expected_grads = gradients(model, out), gradients(reference, expected)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], **exact, msg=lambda m, name=name: f"{name}: {m}")
    for t in sorted(set(range(len(TASKS))) - set(tasks)):  # a task absent from the batch: its heads learn nothing
        absent = [g for name, g in grads.items() if f"_heads.{TASKS[t]}." in name]
        assert absent and all(not g.any() for g in absent)


def test_forward_reads_nothing_back_to_the_host(kit, monkeypatch):
    """On a GPU a read-back waits for every queued kernel; forward must not do one, for any output.

    (A boolean-mask selection also waits, with no Python call to catch: the cutoff filter of the
    edges is one, by design; see AtomisticModel._edges.)"""
    model = kit.make_model("painn", tasks=TASKS).train()
    batch = kit.make_batch(structures(kit)[:4], tasks=[0, 2, 1, 2])

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read back to the host inside forward")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    monkeypatch.setattr(torch, "unique", refuse)
    model(batch, forces="direct", vector_heads=("noise",), embedding=True)
    model(batch, forces="gradient", stress=True)
