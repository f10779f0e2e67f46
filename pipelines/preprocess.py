"""Preprocess a raw corpus into graph shards (Parquet / WebDataset) + manifest.json on any fsspec URL.

    python pipelines/preprocess.py --corpus oc20 --input DIR_OR_URL --output s3://bucket/oc20 --format both

Runs a Ray Data pipeline on a local Ray (`--num-cpus`) or, when RAY_ADDRESS is set (a Ray job),
on that cluster. S3 endpoint and credentials come from the environment (AWS_ENDPOINT_URL[_S3],
AWS_ACCESS_KEY_ID, ...) and are never written to outputs or logs. Rerunning resumes a killed run;
rerunning a finished one with unchanged sources does nothing (and starts no Ray); changed sources
build a new version. Bad records are quarantined (docs/bad-data.md); a run that would publish no
structure fails unless --allow-empty. Errors are one line and exit code 2 (--debug: traceback).
Defaults per corpus (cutoff, K, reader): the corpus's record in atomforge.datasets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from atomforge.cli import add_debug_flag, run_main
from atomforge.corpora import read_corpus
from atomforge.datasets import DATASETS
from atomforge.pipeline import PipelineConfig, run_pipeline
from atomforge.pipeline.executor import up_to_date
from atomforge.pipeline.progress import ProgressDisplay

FORMATS = {"parquet": ("parquet",), "webdataset": ("webdataset",), "both": ("parquet", "webdataset")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True, choices=sorted(DATASETS))
    p.add_argument("--input", required=True, help="raw corpus: file, folder or glob (local path or fsspec URL)")
    p.add_argument("--output", required=True, help="output prefix (local path or fsspec URL, e.g. s3://bucket/x)")
    p.add_argument("--format", default="parquet", choices=sorted(FORMATS))
    p.add_argument("--cutoff", type=float, help="Å (default: per corpus)")
    p.add_argument("--skin", type=float, help="Å stored beyond the cutoff (default 0.5)")
    p.add_argument("--max-neighbors", type=int, help="K (default: per corpus)")
    p.add_argument("--k-store", type=int, help="neighbors stored per atom (default K + 10)")
    p.add_argument("--shard-size", type=int, help="structures per shard (default 10000)")
    p.add_argument("--split-fractions", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--seed", type=int, help="split hash seed (default 0)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=JSON", help="reader option, repeatable")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (ignored on a cluster)")
    p.add_argument("--num-workers", type=int, help="parallel work-unit tasks (default --num-cpus)")
    p.add_argument("--backend", default="ray", choices=("ray", "local"), help="local: no Ray, in-process")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling fairchem v1 *.lmdb values (runs code from the file: trusted sources only)")
    p.add_argument("--allow-empty", action="store_true", help="publish even if every record was quarantined")
    add_debug_flag(p)
    return p.parse_args(argv)


def storage_options_for(url: str) -> dict | None:
    """fsspec options for `url` from the environment: only the S3 endpoint (credentials stay in boto's env)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if url.startswith("s3://") and endpoint:
        return {"client_kwargs": {"endpoint_url": endpoint}}
    return None


def reader_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def init_ray(num_cpus: int) -> None:
    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", log_to_driver=False)
    else:
        # A new local instance: without address="local", ray.init joins (or, given num_cpus, fails on)
        # any other Ray already running on this machine.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours shows structures/s


def build_config(args: argparse.Namespace) -> PipelineConfig:
    options = reader_options(args.option) | ({"trust_pickle": True} if args.trust_pickle else {})
    return PipelineConfig.for_corpus(
        args.corpus, args.input, args.output, formats=FORMATS[args.format], cutoff=args.cutoff, skin=args.skin,
        max_neighbors=args.max_neighbors, k_store=args.k_store, shard_size=args.shard_size, seed=args.seed,
        split_fractions=tuple(args.split_fractions) if args.split_fractions else None, reader_options=options,
        num_workers=args.num_workers or args.num_cpus)


def summary(args: argparse.Namespace, manifest: dict, rate: float | None) -> str:
    counts = manifest["counts"]
    return json.dumps({"output": args.output, "fingerprint": manifest["fingerprint"],
                       "version": manifest.get("version"), "read": counts["read"], "written": counts["written"],
                       "quarantined": counts["quarantined"], "quarantine_reasons": manifest["quarantine"]["counts"],
                       "read_complete": counts.get("read_complete", True), "shards": len(manifest["shards"]),
                       "changed_sources": (manifest.get("previous") or {}).get("changed_sources", []),
                       "structures_per_s": rate})


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    config = build_config(args)
    input_options = storage_options_for(args.input)
    reader = read_corpus(args.corpus, args.input, **config.reader_options,
                         **({"storage_options": input_options} if input_options else {}))
    output_options = storage_options_for(args.output)
    done = up_to_date(config, reader, output_options, input_options)
    if done is not None:  # finished and the sources are unchanged: no Ray, nothing read
        print(summary(args, done, None))
        return 0
    if args.backend == "ray":
        init_ray(args.num_cpus)
    with ProgressDisplay(f"{args.corpus} -> shards", enabled=not args.no_progress) as progress:
        manifest = run_pipeline(config, reader, output_options, backend=args.backend, on_progress=progress,
                                on_plan=progress.plan, input_storage_options=input_options,
                                allow_empty=args.allow_empty)
    print(summary(args, manifest, round(progress.rate, 1)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
