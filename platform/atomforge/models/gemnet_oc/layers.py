"""GemNet-OC's building layers: bias-free dense layers with scaled SiLU, residual pairs, scale factors,
padded aggregation and the efficient bilinear layer (Gasteiger et al. 2021, GemNet §4 and appendix)."""

from __future__ import annotations

import math

import torch
from torch import nn


def he_orthogonal_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    """GemNet's initialisation: a random orthogonal matrix, each output standardised, scaled by 1/sqrt(fan_in).

    `weight` (out, ...) is treated as a map from its trailing dimensions to its first.
    """
    with torch.no_grad():
        flat = weight.view(weight.shape[0], -1)
        nn.init.orthogonal_(flat)
        mean, var = flat.mean(dim=1, keepdim=True), flat.var(dim=1, keepdim=True)
        flat.sub_(mean).div_(torch.sqrt(var + 1e-6)).mul_(1 / math.sqrt(fan_in))
    return weight


class ScaledSiLU(nn.Module):
    """SiLU(x) / 0.6: keeps the variance of standard-normal inputs near 1 (GemNet)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x) * (1 / 0.6)


class Dense(nn.Module):
    """Linear without bias (+ scaled SiLU). No bias anywhere keeps f(0) = 0, so every message that an
    envelope sends to zero at a cutoff stays zero through the layers after it (energy continuity)."""

    def __init__(self, in_features: int, out_features: int, activation: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        he_orthogonal_(self.linear.weight, in_features)
        self.act = ScaledSiLU() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x))


class Residual(nn.Module):
    """(x + Dense(Dense(x))) / sqrt(2)."""

    def __init__(self, units: int):
        super().__init__()
        self.mlp = nn.Sequential(Dense(units, units), Dense(units, units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.mlp(x)) * (1 / math.sqrt(2.0))


def residual_stack(units: int, depth: int) -> nn.Sequential:
    return nn.Sequential(*(Residual(units) for _ in range(depth)))


class ScaleFactor(nn.Module):
    """A fixed multiplier of a summed message (buffer, saved with the weights).

    GemNet fits these once on data so each aggregated message has unit variance at initialisation;
    `atomforge.models.gemnet_oc.scaling.fit_scale_factors` does that here. Unfitted they are 1.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(1.0))
        self.observer = None  # set while fitting: sees (unscaled message, reference) and may set `scale`

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer(x.detach(), reference.detach())
        return x * self.scale.to(x.dtype)


class _GradientScale(torch.autograd.Function):
    """Identity whose gradient is multiplied by `factor` (differentiable, so double backward works)."""

    @staticmethod
    def forward(ctx, x, factor: float):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def shared(weight: torch.Tensor, num_uses: int) -> torch.Tensor:
    """A weight used by `num_uses` blocks, its gradient divided by that number (as GemNet-OC trains them)."""
    return _GradientScale.apply(weight, 1.0 / num_uses)


def padded(values: torch.Tensor, group: torch.Tensor, slot: torch.Tensor, num_groups: int) -> torch.Tensor:
    """values (M, *F) -> (num_groups, K, *F) with values[m] at [group[m], slot[m]], zeros elsewhere; K = max slot + 1."""
    width = int(slot.max()) + 1 if slot.numel() else 0
    out = values.new_zeros(num_groups * width, *values.shape[1:])
    out[group * width + slot] = values  # one flat index: about twice as fast as a two-index put on CPU
    return out.view(num_groups, width, *values.shape[1:])


class EfficientBilinear(nn.Module):
    """Σ over the pairs t of an output element e of W · (rad_w[e] ⊗ sph[t] ⊗ x[t]), GemNet's efficient form.

    rad_w (E, D, S) radial part of each output element (already projected); sph (T, S) angular basis
    and x (T, C_in) message of each pair, grouped by `out` (T,) with `slot` (T,). The sum over pairs is
    a batched matmul of padded tensors, then the bilinear map D·C_in -> C_out gives (E, C_out). With
    `reduce_to` (E,), the (E, D, C_in) sums are first added into `num_targets` atoms (edge-to-atom).
    """

    def __init__(self, in_features: int, basis_features: int, out_features: int):
        super().__init__()
        self.bilinear = Dense(basis_features * in_features, out_features, activation=False)

    def forward(self, rad_w, sph, x, out, slot, reduce_to: torch.Tensor | None = None, num_targets: int = 0):
        num_out = rad_w.shape[0]
        sph_x = padded(sph, out, slot, num_out).transpose(1, 2) @ padded(x, out, slot, num_out)  # (E, S, C)
        mixed = rad_w @ sph_x  # (E, D, C)
        if reduce_to is not None:
            mixed = mixed.new_zeros(num_targets, *mixed.shape[1:]).index_add_(0, reduce_to, mixed)
        return self.bilinear(mixed.reshape(mixed.shape[0], mixed.shape[1] * mixed.shape[2]))
