"""The GPU path in one short run: AMP training, the loader's data wait, backbone cost, GPU neighbor lists, export.

    python benchmarks/gpu_check.py [--device cuda|cpu] [--minutes 5] [--json F] [--work DIR] [--parts NAME ...]

Parts (modules of benchmarks/gpu/; on CUDA each in its own process, on the CPU one process for all):
  amp        every debug objective mix (JMP, JMP+DeNS, SCD, denoising, H-masking) trains 30 steps
             in fp32, bf16 and fp16 with the training loop; finite losses, step 1 within tolerance of fp32
  loader     the training loader with num_workers 0 / 4 / 8 and pinned memory: steps/s, share of
             step time waiting for data
  backbones  forward+backward time and peak memory of every backbone preset at 512 / 2,048 / 8,192
             atoms, gradient and direct forces, eager and torch.compile
  neighbors  the preprocessing graph stage with vesin-torch on the device vs vesin on the CPU:
             same structures, same edges after the project's ordering
  export     a run trained on the device, exported, loaded in a CPU-only process: same weights,
             same predictions
The demo shards are built first (jobs/make_demo_corpora.py --size tiny + the pipeline, ~10 s) in
--work. Budgets are shares of --minutes; a part ends its cases at its deadline (the rest are
reported as skipped) and is killed shortly after it; a failing case or part reports its error and
the others run. Prints one table per part and writes everything as JSON. Exit code 0 when no part
failed. `--device cpu` runs the same code at tiny sizes (CI proves the script with it). docs/gpu.md
says how to run it on a lent GPU machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The checkout's own source, also where atomforge is not installed (a bare GPU machine, docs/gpu.md).
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "platform")]
CHILD_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "platform"), os.environ.get("PYTHONPATH")])),
             "PYTHONUNBUFFERED": "1"}

from gpu.harness import Recorder, Setup, read_rows, table, verdict  # noqa: E402

PARTS = ("amp", "loader", "backbones", "neighbors", "export")
MODULES = {"amp": "gpu.amp", "loader": "gpu.data_wait", "backbones": "gpu.backbones", "neighbors": "gpu.neighbors",
           "export": "gpu.roundtrip"}
GRACE_S = 20.0  # a part still running this long after its deadline is killed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (default; refused without a CUDA device) or cpu (tiny sizes, proves the script)")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget of the whole run")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--work", type=Path, help="folder for shards, runs and logs (default: a new temp folder)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--run-parts", help=argparse.SUPPRESS)  # internal: run these parts in this process
    parser.add_argument("--end", type=float, help=argparse.SUPPRESS)  # internal: the run's end (time.time())
    args = parser.parse_args(argv)
    if not args.minutes > 0:
        parser.error(f"--minutes must be positive, got {args.minutes}")
    return args


def run_parts_here(args: argparse.Namespace) -> int:
    """The child: parts in order, each with its share of the time left; rows appended as cases finish."""
    shards = json.loads((args.work / "shards.json").read_text())
    names = args.run_parts.split(",")
    shares = {name: importlib.import_module(MODULES[name]).SHARE for name in names}
    for index, name in enumerate(names):
        now = time.time()
        deadline = now + (args.end - now) * shares[name] / sum(shares[n] for n in names[index:])
        (args.work / f"{name}.started").write_text(json.dumps({"started": now, "deadline": deadline}))
        setup = Setup(args.device, deadline, args.work, shards, tiny=args.device == "cpu")
        importlib.import_module(MODULES[name]).run(setup, Recorder(args.work / f"{name}.rows.jsonl", setup))
        (args.work / f"{name}.done").write_text(str(time.time()))
    os._exit(0)  # the rows are written; tearing down CUDA, compile and loader workers can take seconds


def run_group(names: list[str], args: argparse.Namespace, end: float) -> tuple[str | None, str]:
    """Run parts `names` in one child; kill it once its current part is GRACE_S past its deadline.

    Returns (the part that did not finish or None, what happened to it)."""
    for name in names:
        for suffix in (".rows.jsonl", ".started", ".done"):
            (args.work / f"{name}{suffix}").unlink(missing_ok=True)
    log_file = args.work / f"{names[0]}.log"
    cmd = [sys.executable, __file__, "--run-parts", ",".join(names), "--end", str(end), "--device", args.device,
           "--work", str(args.work)]
    with log_file.open("w") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                 env={**os.environ, **CHILD_ENV})
        while child.poll() is None:
            time.sleep(0.5)
            current = next((n for n in names if not (args.work / f"{n}.done").exists()), None)
            started = args.work / f"{current}.started"
            deadline = json.loads(started.read_text())["deadline"] if current and started.exists() else end
            if time.time() > min(deadline + GRACE_S, end + GRACE_S / 2):
                os.killpg(child.pid, signal.SIGKILL)  # its loader workers and compile workers too
                child.wait()
                return current, f"killed {time.time() - deadline:.0f} s after its deadline (a case overran its time box)"
    unfinished = next((n for n in names if not (args.work / f"{n}.done").exists()), None)
    if unfinished is None:
        return None, ""
    tail = [line for line in log_file.read_text().splitlines() if line.strip()][-1:]
    return unfinished, f"exit code {child.returncode}: {tail[0][:300] if tail else 'no output'} (log: {log_file})"


def part_result(name: str, args: argparse.Namespace, note: str) -> dict:
    started, done = args.work / f"{name}.started", args.work / f"{name}.done"
    began = json.loads(started.read_text())["started"] if started.exists() else time.time()
    ended = float(done.read_text()) if done.exists() else time.time()
    rows = read_rows(args.work / f"{name}.rows.jsonl", "killed at its hard stop" if note.startswith("killed") else "")
    return {"status": verdict(rows, note), "error": note, "seconds": round(ended - began, 1), "rows": rows}


def run_parts(args: argparse.Namespace, end: float) -> dict[str, dict]:
    """Every part's result. On CUDA each part has its own process (its own CUDA context and memory
    peak; a crash stays there); on the CPU one process runs them all (imports paid once). A part that
    does not finish is reported and the parts after it run in a new process."""
    results, remaining = {}, list(args.parts)
    while remaining:
        group = remaining[:1] if args.device == "cuda" else remaining
        unfinished, note = run_group(group, args, end)
        for name in group:
            if name == unfinished:
                results[name] = part_result(name, args, note)
                break
            results[name] = part_result(name, args, "")
        remaining = remaining[len([n for n in group if n in results]):]
    return results


def device_info(device: str) -> dict:
    import torch

    info = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda}
    if device == "cuda":
        info["name"] = torch.cuda.get_device_name(0)
    return info


def build_shards(work: Path) -> dict:
    from gpu.data import demo_shards

    started = time.perf_counter()
    shards = demo_shards(work / "data")
    (work / "shards.json").write_text(json.dumps(shards))
    return {"seconds": round(time.perf_counter() - started, 1), "shards": shards}


def report_tables(report: dict) -> str:
    out = [f"GPU check on {report['info']}: {report['wall_s']:.0f} s of a {report['minutes']:g}-minute budget; "
           f"demo shards in {report['setup']['seconds']:.0f} s"]
    for name, part in report["parts"].items():
        module = importlib.import_module(MODULES[name])
        title = f"\n{module.TITLE}: {part['status'].upper()} ({part['seconds']:.0f} s)"
        if part["error"]:
            title += f" - {part['error']}"
        out.append(table(title, module.COLUMNS, part["rows"]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_parts:
        return run_parts_here(args)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; run with --device cpu for the CPU proof", file=sys.stderr)
        return 2
    start = time.time()
    end = start + 60 * args.minutes
    args.work = (args.work or Path(tempfile.mkdtemp(prefix="atomforge-gpucheck-"))).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    report = {"info": device_info(args.device), "minutes": args.minutes, "work": str(args.work),
              "setup": build_shards(args.work)}
    report["parts"] = run_parts(args, end)
    report["wall_s"] = round(time.time() - start, 1)
    print(report_tables(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=float))
        print(f"\nwrote {args.json}")
    return 1 if any(part["status"] == "fail" for part in report["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
