"""Models: backbones behind one capability interface, wrapped with per-task and named heads.

The contract (training, export and objectives use exactly this):

    from atomforge.models import AtomisticModel
    from atomforge.models.painn import PaiNNConfig              # default backbone
    from atomforge.models.equivariant import EquivariantConfig  # e3nn, l_max >= 2
    from atomforge.models.gemnet_oc import GemNetOCConfig       # JMP's backbone (JMP-S = small())

    model = AtomisticModel(PaiNNConfig.tiny(), tasks=("oc20", "ani1x"))   # or {name: TaskSpec}
    out = model(batch, forces="direct")          # ModelOutput: energy (G,) float64 eV, forces (N,3) eV/Å
    out = model(batch, forces="gradient", stress=True)   # -∂E/∂x, (1/V)∂E/∂ε; create_graph = model.training
    out = model(batch, energy=False, embedding=True)     # (G, C) graph embedding (SCD pass 1)

    # What the model reads is one record; a batch means its clean view, ModelInputs.clean(batch).
    # Objectives' corruptions return another (objectives.corruption), e.g.
    inputs = ModelInputs.clean(batch).replace(positions=noisy, edge_index=ei, shifts=sh)
    out = model(inputs, energy=False, vector_heads=("noise",))
    out = model(inputs.replace(condition=c, drop_condition=drop), vector_heads=("noise",))  # SCD pass 2
    out = model(inputs.replace(vector_input=forces_masked), forces="direct")  # DeNS force encoding
    model.capabilities                           # frozenset[Capability], checked by ObjectiveMix
    d = model.config_dict(); AtomisticModel.from_config_dict(d)   # JSON-able, no pickle
    model.set_task_statistics(specs)             # normalisers from manifests (also kept as buffers)
    loss = loss + model.ddp_anchor()             # 0·Σparams: unused heads never break DDP
                                                 # (ObjectiveMix adds it for you)

Conventions: task ids (`batch.task`, `ModelInputs.task`) index `model.tasks`, and each atom's
energy / direct-force head is its task's, all tasks' heads evaluated as one batched module
(`heads.TaskHeads`, no host synchronisation); outputs are physical units (the model
de-normalises with its per-task buffers: E = s_E·Σ_atoms head + Σ_atoms (linear_reference[z] + μ_E)
(TaskSpec.mean_reference 'atom', extensive) or ... + μ_E once per structure ('structure', JMP);
direct F = s_F·head); objectives normalise errors with the TaskSpecs in their context. Edge vectors
are computed inside forward from positions (vector = pos[src] + shifts @ cell - pos[dst]) so
gradients flow; edges longer than the backbone cutoff are dropped there. The MASK atom type is
atomic number `MASK_Z` (0). Wrap with DDP(find_unused_parameters=False); objectives call
`unwrap(model)` for attributes.
"""

from atomforge.models.atomistic import AtomisticModel, ModelOutput
from atomforge.models.backbone import MASK_Z, Backbone, BackboneInputs, Capability, NodeFeatures, unwrap
from atomforge.models.inputs import ModelInputs

__all__ = ["AtomisticModel", "ModelInputs", "ModelOutput", "Backbone", "BackboneInputs", "Capability", "NodeFeatures",
           "MASK_Z", "unwrap"]
