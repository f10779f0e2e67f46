"""Mixed precision: under bf16 autocast (what `scaling.amp=bf16` trains with, on a GPU or the CPU) every
backbone's energy and forces, direct and gradient, are finite and equal the fp32 outputs to bf16 rounding."""

from __future__ import annotations

import pytest
import torch

BF16_ROUNDOFF = 2.0**-8
# The gpu check's step-1 loss tolerance (benchmarks/gpu/amp.py): 16 unit roundoffs, here relative to
# the largest magnitude of each output, since single entries near zero have no relative precision.
TOLERANCE = 16 * BF16_ROUNDOFF


@pytest.mark.parametrize("forces", ["direct", "gradient"])
def test_bf16_autocast_equals_fp32_to_rounding(kit, backbone_kind, forces):
    model = kit.make_model(backbone_kind)
    batch = kit.make_batch([kit.labelled(kit.slab(), "slab"), kit.labelled(kit.ethanol(), "ethanol")], tasks=[0, 1])
    reference = model(batch, forces=forces)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(batch, forces=forces)
    assert low.energy.dtype == torch.float64  # physical energies stay float64 (references reach 10⁴ eV)
    for name in ("energy", "forces"):
        ours, exact = getattr(low, name).double(), getattr(reference, name).double()
        assert torch.isfinite(ours).all(), f"{name} under bf16 autocast is not finite"
        scale = exact.abs().max()
        error = (ours - exact).abs().max()
        assert error <= TOLERANCE * scale, f"{name}: max error {error:.3g} > {TOLERANCE:.3g} x {scale:.3g}"
