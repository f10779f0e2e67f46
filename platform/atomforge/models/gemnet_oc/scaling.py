"""Fitting GemNet-OC's scale factors on data: each summed message starts at the variance of its input.

GemNet (Gasteiger et al. 2021, appendix) multiplies every aggregated message by a constant fitted
once so that, at initialisation, the message has the variance of the per-element quantity it sums
(`reference`). Factors are fitted in the order the forward pass meets them, each with the earlier
ones already applied, as the paper's code does; here in one forward pass over a representative batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from atomforge.models.gemnet_oc.layers import ScaleFactor


def _fit_on_first_use(factor: ScaleFactor, fitted: dict, name: str):
    def observe(message: torch.Tensor, reference: torch.Tensor) -> None:
        if name in fitted:
            return
        variance_out = float(message.var(dim=0).mean()) if message.shape[0] > 1 else 0.0
        variance_in = float(reference.var(dim=0).mean()) if reference.shape[0] > 1 else 0.0
        if not (variance_out > 0 and variance_in > 0):
            raise ValueError(f"scale factor {name}: no variance to fit on this batch (message {variance_out}, "
                             f"reference {variance_in}); use a batch of several structures of several atoms")
        fitted[name] = math.sqrt(variance_in / variance_out)
        factor.scale.fill_(fitted[name])  # applied to this message already, so later factors see it
    return observe


@torch.no_grad()
def fit_scale_factors(model: nn.Module, batch, **forward_kwargs) -> dict[str, float]:
    """Fit every `ScaleFactor` of `model` (an AtomisticModel with a GemNet-OC backbone) on `batch`.

    Resets the factors to 1, runs one forward pass (`model(batch, **forward_kwargs)`) in which each
    factor, when first reached, is set to sqrt(var(reference) / var(output)). Returns name -> factor.
    """
    factors = {name: m for name, m in model.named_modules() if isinstance(m, ScaleFactor)}
    if not factors:
        raise ValueError(f"{type(model).__name__} has no GemNet-OC scale factors to fit")
    fitted: dict[str, float] = {}
    for name, factor in factors.items():
        factor.scale.fill_(1.0)
        factor.observer = _fit_on_first_use(factor, fitted, name)
    try:
        model(batch, **forward_kwargs)
    finally:
        for factor in factors.values():
            factor.observer = None
    missing = sorted(set(factors) - set(fitted))
    if missing:
        raise ValueError(f"scale factors never reached on this batch (no triplets or quadruplets?): {missing[:5]}")
    return fitted
