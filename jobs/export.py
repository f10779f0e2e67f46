"""Export a checkpoint as safetensors + config.json + model card, to a folder or a Hugging Face hub repo.

    python jobs/export.py --checkpoint runs/finetune/demo/pretrained/best --to exports/demo
    python jobs/export.py --checkpoint s3://bucket/runs/jmp_s --to hf://my-org/atomforge-jmp-s [--dry-run]

--checkpoint: a run directory (its newest checkpoint), a checkpoint directory (local or fsspec URL),
an export folder or a hub id. EMA weights are exported unless --no-ema. Hub uploads use the token in
HF_TOKEN or the hub client's stored login (`hf auth login`); it is never printed. See docs/finetune.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from atomforge.artifacts.export import export
from atomforge.artifacts.reference import load_model
from atomforge.cli import add_debug_flag, run_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="run dir | checkpoint dir/URL | export dir | hub id")
    parser.add_argument("--to", required=True, help="output folder or hf://ORG/NAME")
    parser.add_argument("--dry-run", action="store_true", help="write the files, upload nothing")
    parser.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA copy")
    parser.add_argument("--license", default="apache-2.0", help="licence id written into the model card")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    result = export(load_model(args.checkpoint, use_ema=not args.no_ema), args.to, dry_run=args.dry_run,
                    token=os.environ.get("HF_TOKEN") or None, license_id=args.license)
    for name, size in result.files.items():
        print(f"  {name:<20} {size:>10,d} bytes")
    if result.repo_id and result.uploaded:
        print(f"uploaded to https://huggingface.co/{result.repo_id} (files staged in {result.folder})")
    elif result.repo_id:
        print(f"dry run: would upload these files to {result.repo_id}; staged in {result.folder}")
    else:
        print(f"exported to {result.folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
