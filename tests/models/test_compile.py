"""torch.compile of a backbone traces (dynamo guards on every attribute its forward reads) and gives
the eager outputs; the "eager" backend runs the traced graph as it is, so this checks the tracing
that benchmarks/gpu/backbones.py's compiled cases rely on, cheaply."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo


@pytest.mark.slow  # about 6 s: the e3nn build and one dynamo trace
def test_compiled_e3nn_backbone_traces_and_gives_the_eager_outputs(kit):
    model = kit.make_model("e3nn")
    batch = kit.make_batch([kit.labelled(kit.slab(), "s"), kit.labelled(kit.ethanol(), "m")], tasks=[0, 1])
    eager = model(batch, forces="direct")
    torch._dynamo.reset()
    model.backbone = torch.compile(model.backbone, backend="eager", fullgraph=True)
    compiled = model(batch, forces="direct")
    torch.testing.assert_close(compiled.energy, eager.energy, rtol=0, atol=0)
    torch.testing.assert_close(compiled.forces, eager.forces, rtol=0, atol=0)
