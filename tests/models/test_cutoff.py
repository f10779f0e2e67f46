"""Every shipped backbone preset: energy and forces continuous where a pair crosses the model's cutoff.

Presets are discovered, not listed: every `*Config` class in an `atomforge.models` module with
`tiny` / `small` / `large` classmethods (so a backbone added later is covered without editing this
file). Float64, random init; a pair at cutoff - 1e-3 Å and cutoff + 1e-3 Å must give the same energy
(1e-9 eV) and forces (1e-6 eV/Å). The envelope is zero with its first two derivatives at the cutoff,
so a continuous model differs by O(δ³) in energy and O(δ²) in forces over the 2δ step (measured:
< 1e-10 eV, < 2e-7 eV/Å); a filter that is not zero at the cutoff jumps by meV.

Continuity does not depend on the weights' values, so GemNet-OC's orthogonal initialisation is drawn here from
a normal distribution (its rows standardised as before): a QR per weight matrix is ~45 s of CPU for JMP-L's
~500 matrices, and the test is the same with any random weights.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import atomforge.models
import numpy as np
import pytest
import torch
from atomforge.batch import collate
from atomforge.models import AtomisticModel
from atomforge.schema import Structure

PRESETS = ("tiny", "small", "large")
DELTA = 1e-3  # Å either side of the cutoff


def backbone_presets() -> list[tuple[str, object]]:
    """(name, factory) of every preset classmethod of every backbone config class in atomforge.models."""
    found = []
    for info in pkgutil.walk_packages(atomforge.models.__path__, "atomforge.models."):  # backbone packages too
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if not name.endswith("Config") or cls.__module__ != module.__name__ or not hasattr(cls, "build"):
                continue
            found += [(f"{name}.{p}", getattr(cls, p)) for p in PRESETS if isinstance(inspect.getattr_static(cls, p, None), classmethod)]
    return found


PARAMS = [pytest.param(factory, id=name, marks=[] if name.endswith(".tiny") else [pytest.mark.slow])
          for name, factory in backbone_presets()]


def test_presets_are_discovered():
    names = {name for name, _ in backbone_presets()}
    assert {"PaiNNConfig.tiny", "PaiNNConfig.small", "PaiNNConfig.large", "EquivariantConfig.tiny", "GemNetOCConfig.tiny"} <= names


def _normal_(tensor: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """`torch.nn.init.orthogonal_`'s stand-in: i.i.d. normal entries (`he_orthogonal_` standardises each row)."""
    with torch.no_grad():
        return tensor.normal_(0.0, gain)


def _model(factory, monkeypatch) -> AtomisticModel:
    monkeypatch.setattr(torch.nn.init, "orthogonal_", _normal_)
    torch.manual_seed(0)
    model = AtomisticModel(factory(), tasks=("oc20",)).double().eval()
    with torch.no_grad():  # a non-trivial null condition, so conditioned blocks are exercised too
        if model.null_condition is not None:
            model.null_condition.normal_()
    return model


def _outputs(model, z, pos) -> tuple[float, np.ndarray, np.ndarray]:
    """(energy eV, gradient forces (N, 3), direct forces (N, 3)) in float64."""
    cutoff = float(model.backbone.cutoff)
    structure = Structure("probe", np.asarray(z), np.asarray(pos, dtype=np.float64), None, np.zeros(3, bool))
    batch = collate([structure], cutoff=cutoff + 1.0)  # the pair is in the graph on both sides
    for key in ("pos", "ref_pos", "cell", "shifts", "cand_shifts", "forces", "stress"):
        batch[key] = batch[key].double()
    batch.pos = torch.as_tensor(structure.positions)
    out = model(batch, forces="gradient")
    direct = model(batch, forces="direct").forces
    return float(out.energy.detach()), out.forces.detach().numpy(), direct.detach().numpy()


def _assert_continuous(model, z, inside, outside) -> None:
    e_in, f_in, d_in = _outputs(model, z, inside)
    e_out, f_out, d_out = _outputs(model, z, outside)
    assert abs(e_in - e_out) < 1e-9, f"energy jumps by {1e3 * (e_in - e_out):.4g} meV at the cutoff"
    np.testing.assert_allclose(f_in, f_out, atol=1e-6, err_msg="gradient forces jump at the cutoff")
    np.testing.assert_allclose(d_in, d_out, atol=1e-6, err_msg="direct forces jump at the cutoff")


@pytest.mark.parametrize("factory", PARAMS)
def test_energy_and_forces_continuous_where_pairs_cross_the_cutoff(factory, monkeypatch):
    """An O-O dimer at the cutoff ± δ, and a rigid H-N pair leaving a rigid C-O pair.

    C, O at (±0.6, 0, 0) and H, N at (0, ±0.5, h) are all sqrt(0.61 + h²) apart, so the four C/O-H/N
    pairs cross the cutoff together while the pairs inside each group keep their length: beyond the
    cutoff the energy is that of the two isolated groups.
    """
    model = _model(factory, monkeypatch)
    cutoff = float(model.backbone.cutoff)
    _assert_continuous(model, [8, 8], [[0, 0, 0], [cutoff - DELTA, 0, 0]], [[0, 0, 0], [cutoff + DELTA, 0, 0]])
    height = np.sqrt(cutoff**2 - 0.61)
    step = DELTA * cutoff / height  # moves the four pair distances by δ

    def place(h):
        return [[0.6, 0, 0], [-0.6, 0, 0], [0, 0.5, h], [0, -0.5, h]]

    _assert_continuous(model, [6, 8, 1, 7], place(height - step), place(height + step))
