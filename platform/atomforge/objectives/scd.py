"""SCD (seed 000): self-conditioned denoising, two passes with shared weights (OBJECTIVES.md §3)."""

from __future__ import annotations

import torch

from atomforge.models.backbone import Capability, unwrap
from atomforge.objectives.corruption import gaussian_corruption, uniform
from atomforge.objectives.objective import Objective, ObjectiveContext, ObjectiveResult


class SCD(Objective):
    """Label-free: pass 1 embeds a near-clean view (σ_clean, null condition) into c (G, C); with
    probability `condition_dropout` per graph c becomes the learned null token; pass 2 denoises the
    corrupted view (σ, all atoms) conditioned on c in every block. Loss MSE(ε̂, ε/σ) over atoms and
    components; no stop-gradient, so the loss trains pass 1 too. Noise is added to Cartesian
    positions and the periodic graph is rebuilt for each view. freeze_atom_embeddings detaches the
    atom-type table in both passes and lists it in `frozen_parameters`, so a run whose every
    objective freezes it leaves it out of the optimizer (no update at all, not even weight decay).
    """

    name = "scd"
    requires = frozenset({Capability.NODE_VECTORS, Capability.GRAPH_CONDITION})
    heads = ("noise",)

    def __init__(self, sigma: float = 0.04, clean_sigma: float = 0.005, condition_dropout: float = 0.2,
                 freeze_atom_embeddings: bool = True):
        if not sigma > 0 or clean_sigma < 0:
            raise ValueError(f"SCD: sigma must be > 0 and clean_sigma >= 0, got {sigma}, {clean_sigma}")
        self.sigma, self.clean_sigma = sigma, clean_sigma
        self.condition_dropout, self.freeze = condition_dropout, freeze_atom_embeddings

    def frozen_parameters(self, model) -> list:
        return unwrap(model).backbone.atom_embedding_parameters() if self.freeze else []

    def run(self, model, batch, ctx: ObjectiveContext) -> ObjectiveResult:
        every = torch.ones(batch.pos.shape[0], dtype=torch.bool, device=batch.pos.device)
        sigma_clean = torch.full((batch.pos.shape[0],), self.clean_sigma, device=batch.pos.device)
        near_clean = gaussian_corruption(batch, ctx, sigma_clean, every).inputs
        first = model(near_clean, energy=False, embedding=True, freeze_embedding=self.freeze)
        drop = uniform((batch.num_graphs,), ctx, batch.pos.device) < self.condition_dropout
        noised = gaussian_corruption(batch, ctx, torch.full_like(sigma_clean, self.sigma), every)
        conditioned = noised.inputs.replace(condition=first.embedding, drop_condition=drop)
        second = model(conditioned, energy=False, vector_heads=("noise",), freeze_embedding=self.freeze)
        err = second.vectors["noise"] - noised.noise / self.sigma
        loss = (err * err).mean()
        return ObjectiveResult(loss, {"noise_mse": float(loss.detach()), "dropped_fraction": float(drop.double().mean())})
