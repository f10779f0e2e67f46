"""The whole flow on the embedded default, in order (`make demo`).

    python jobs/demo.py --output demo_out [--size small] [--num-cpus 2]

1. demo corpora in the real raw formats (EMT / GFN2-xTB labels)   jobs/make_demo_corpora.py
2. raw corpora -> graph shards + manifests (Ray Data)              pipelines/preprocess.py
3. JMP multi-task pretraining, 2 gloo workers (Ray Train)          jobs/jmp_pretrain.py --recipe debug_cpu
4. the rMD17-format set -> shards (one pool split)                 pipelines/downstream.py
5. fine-tuning on its shards, pretrained vs scratch, same trainer  jobs/finetune.py --compare
   (one run of one seed: it shows the flow, not pretraining's worth; that is `make replicate`)
6. export of the fine-tuned model (safetensors + config + card)    jobs/export.py
7. pictures: pretraining curves per task, parity plots             atomforge.finetune.plots

Every step is the entry script a user would run, started as a subprocess with the same flags.
Re-running is cheap where it can be: corpora are kept, preprocessing of finished shards is a
no-op; pretraining, fine-tuning and export start afresh.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from atomforge.cli import add_debug_flag, run_main
from atomforge.datasets import PRETRAINING

REPO = Path(__file__).resolve().parents[1]


def run(step: str, argv: list[str]) -> None:
    """Run one entry script; stop the demo with its exit code if it fails (its error is already printed)."""
    print(f"\n=== {step}\n$ python {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    # Tiny demo models: one torch thread per process beats threads contending for a laptop's cores.
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    result = subprocess.run([sys.executable, *argv], cwd=REPO, env=env)
    if result.returncode != 0:
        raise ValueError(f"demo step '{step}' failed with exit code {result.returncode} (its message is above)")
    print(f"--- {step}: {time.perf_counter() - t0:.0f} s", flush=True)


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("demo_out"))
    parser.add_argument("--size", choices=("tiny", "small", "medium"), default="small")
    parser.add_argument("--num-cpus", type=int, default=2)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    out = args.output.resolve()
    raw, shards = out / "raw", out / "shards"
    pretrain, finetune, export = out / "pretrain", out / "finetune", out / "export"

    if not (raw / "demo.json").exists():
        run("demo corpora", ["jobs/make_demo_corpora.py", "--output", str(raw), "--size", args.size])
    for corpus in PRETRAINING:
        run(f"preprocess {corpus}", ["pipelines/preprocess.py", "--corpus", corpus, "--input", str(raw / corpus),
                                     "--output", str(shards / corpus), "--num-cpus", str(args.num_cpus)])
    data = [f"--data={task}={shards / task}" for task in PRETRAINING]
    run("pretrain (debug_cpu, 2 workers)", ["jobs/jmp_pretrain.py", "--recipe", "debug_cpu", *data,
                                            "--output", str(fresh(pretrain))])
    rmd17 = next((raw / "rmd17").glob("*.npz"))
    run("preprocess rmd17 (downstream)", ["pipelines/downstream.py", "--input", str(rmd17), "--output", str(shards / "rmd17")])
    run("fine-tune pretrained vs scratch", ["jobs/finetune.py", "--recipe", "rmd17_debug", "--checkpoint", str(pretrain),
                                            "--data", str(shards / "rmd17"), "--compare", "--output", str(fresh(finetune))])
    run("export", ["jobs/export.py", "--checkpoint", str(finetune / "pretrained" / "best"), "--to", str(fresh(export))])

    from atomforge.finetune.plots import write_plots

    pictures = write_plots(finetune, pretrain_run=pretrain)
    print("\n=== done")
    print(f"comparison table : {finetune / 'comparison.json'}  (one run, one seed: over seeds see make replicate,"
          " docs/replication.md)")
    print(f"exported model   : {export}  (atomforge.load_pretrained('{export}'))")
    for picture in pictures:
        print(f"picture          : {picture}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
