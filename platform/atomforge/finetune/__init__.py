"""Fine-tuning: recipes on the one trainer (`atomforge.training`), evaluation in physical units, comparison, plots.

    from atomforge.finetune.run import compare, run_variant
    from atomforge.recipes.finetune import rmd17_debug
    table, report = compare(with_data(rmd17_debug(), {"rmd17": "shards/rmd17"}), checkpoint="runs/debug_cpu")

A fine-tuning run is a `TrainConfig` (kind "finetune"): a pretrained model to start from
(`init`), exact seeded counts from downstream shards (`TaskData.subset`; preprocess a raw file with
`atomforge.pipeline.downstream.prepare_downstream`), statistics fitted on its training rows, an
epoch budget, JMP's layer-wise LR and early stopping as a hook. Modules: run (one run on the
trainer, its evaluation and files, compare), evaluate (MAE/RMSE in meV, meV/Å), plots (loss curves, parity).
"""
