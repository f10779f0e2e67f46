"""Every entry point a RayJob names exists in the repo and accepts the arguments the manifest gives it."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import APP_DIR, OVERLAYS, REPO

# One fresh interpreter per script, like the Ray job's: run the script as __main__ with `--help`
# (its real CLI path), then load it without running main() and check each manifest's argument list
# with the script's own code: `build_parser() -> ArgumentParser` or `parse_args(argv) -> Namespace`,
# then `build_config(args)` where the script has it (a dry run: config built and validated, no Ray).
CHECK_SCRIPT = r"""
import contextlib, io, json, os, runpy, sys
script, arg_lists = sys.argv[1], json.loads(sys.argv[2])
sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python script` would have it
sys.argv = [script, "--help"]
help_out = io.StringIO()
try:
    with contextlib.redirect_stdout(help_out):
        runpy.run_path(script, run_name="__main__")
    help_code = 0
except SystemExit as exit_:
    help_code = exit_.code or 0
namespace = runpy.run_path(script, run_name="entry_point_check")
if callable(namespace.get("build_parser")):
    parse = lambda argv: namespace["build_parser"]().parse_args(argv)
else:
    parse = namespace.get("parse_args") if callable(namespace.get("parse_args")) else None
build_config = namespace.get("build_config") if callable(namespace.get("build_config")) else None
verdicts = []
for argv in arg_lists:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parse(argv) if parse else None
            if args is not None and build_config is not None:
                build_config(args)
        verdicts.append("")
    except SystemExit as exit_:
        verdicts.append(stderr.getvalue() or f"exited: {exit_.code}")
    except ValueError as error:
        verdicts.append(f"build_config: {error}")
print(json.dumps({"help_code": help_code, "help": help_out.getvalue(), "verdicts": verdicts,
                  "checked_with": [f.__name__ for f in (parse, build_config) if f]}))
"""


def job_commands(rendered) -> list[tuple[str, str, Path, list[str]]]:
    """(overlay, job name, script path in the repo, arguments) for every RayJob."""
    out = []
    for overlay in OVERLAYS:
        for doc in rendered[overlay]:
            if doc["kind"] == "RayJob":
                python, script, *args = shlex.split(doc["spec"]["entrypoint"])
                assert python == "python", doc["spec"]["entrypoint"]
                assert script.startswith(APP_DIR + "/"), f"{script}: the image keeps the code in {APP_DIR}"
                out.append((overlay, doc["metadata"]["name"], REPO / script.removeprefix(APP_DIR + "/"), args))
    return out


def test_entry_points_exist(rendered):
    missing = sorted({str(path.relative_to(REPO)) for _, _, path, _ in job_commands(rendered) if not path.is_file()})
    assert not missing, f"manifests name entry points that are not in the repo: {missing}"


@pytest.mark.slow
def test_entry_points_accept_their_arguments(rendered):
    by_script: dict[Path, list[tuple[str, list[str]]]] = {}
    for overlay, job, path, args in job_commands(rendered):
        by_script.setdefault(path, []).append((f"{overlay}/{job}", args))
    missing = [str(path.relative_to(REPO)) for path in by_script if not path.is_file()]
    assert not missing, f"not in the repo: {missing}"
    # The scripts import torch and Ray: check them concurrently.
    running = {path: subprocess.Popen(
        [sys.executable, "-c", CHECK_SCRIPT, str(path), json.dumps([args for _, args in uses])],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for path, uses in by_script.items()}
    problems = []
    for path, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, f"checking {path.name} failed:\n{stderr[-3000:]}"
        report = json.loads(stdout.strip().splitlines()[-1])
        assert report["help_code"] == 0, f"{path.name} --help exited with {report['help_code']}"
        for (where, args), verdict in zip(by_script[path], report["verdicts"]):
            flags = sorted({arg.split("=", 1)[0] for arg in args if arg.startswith("--")})
            problems += [f"{where}: {flag} is not in {path.name} --help"
                         for flag in flags if not re.search(rf"{re.escape(flag)}\b", report["help"])]
            if verdict:
                problems.append(f"{where}: {path.name} rejects its arguments: {verdict}")
    assert not problems, "\n".join(problems)
