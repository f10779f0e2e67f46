"""Fine-tuning: pretrained backbone + new heads on a downstream set, evaluated in physical units.

    from atomforge.finetune.run import compare, run_variant
    from atomforge.recipes.finetune import rmd17_debug
    table, report = compare(dataclasses.replace(rmd17_debug(), data=...), checkpoint="runs/debug_cpu")

Modules: config (typed dataclasses), data (read, split, statistics, graphs), pretrained (the
downstream model from a pretrained one; restoring any checkpoint / export / hub id is
`atomforge.artifacts.reference.load_model`), trainer (layer-wise LR, EMA, early stopping), evaluate
(MAE/RMSE in meV, meV/Å), run (one run, its checkpoint and task records, compare), plots (loss
curves, parity).
"""
