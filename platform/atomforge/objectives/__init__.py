"""Pretraining objectives: each owns its corruption and forward passes; ObjectiveMix combines them.

    from atomforge.objectives import JMPSupervised, ObjectiveContext, ObjectiveMix
    mix = ObjectiveMix([(JMPSupervised(), 1.0)], model)          # checks capabilities now
    ctx = ObjectiveContext(generator=g, tasks=specs, task_names=model.tasks, step=s, total_steps=n)
    result = mix.run(model, batch, ctx)   # ObjectiveResult(loss, metrics); result.loss.backward()

Every objective: `requires` (Capability set), `labels`, `heads`, `run(model, batch, ctx)`.
All randomness comes from `ctx.generator`. See docs/objectives.md for each method's mechanics.
"""

from atomforge.objectives.denoising import CoordinateDenoising, DerivativeDenoising, NoisyNodes
from atomforge.objectives.dens import DeNS
from atomforge.objectives.hmask import HydrogenMasking
from atomforge.objectives.mix import LinearSchedule, MixEntry, ObjectiveMix
from atomforge.objectives.objective import Objective, ObjectiveContext, ObjectiveResult
from atomforge.objectives.scd import SCD
from atomforge.objectives.supervised import DerivativeForceField, JMPSupervised

__all__ = [
    "Objective", "ObjectiveContext", "ObjectiveResult", "ObjectiveMix", "MixEntry", "LinearSchedule",
    "JMPSupervised", "DerivativeForceField", "DeNS", "SCD", "CoordinateDenoising", "DerivativeDenoising",
    "NoisyNodes", "HydrogenMasking",
]
