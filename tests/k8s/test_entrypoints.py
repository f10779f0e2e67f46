"""Every entry point a RayJob names exists in the repo and accepts the arguments the manifest gives it."""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import APP_DIR, OVERLAYS, REPO

# Run in a fresh interpreter, like the Ray job would: load the script without running main(), and
# parse each argument list with the script's own argparse code when it exposes it, as
# `build_parser() -> ArgumentParser` or `parse_args(argv) -> Namespace`.
PARSE_WITH_SCRIPT_PARSER = r"""
import contextlib, io, json, runpy, sys
namespace = runpy.run_path(sys.argv[1], run_name="entry_point_check")
if callable(namespace.get("build_parser")):
    parse = lambda argv: namespace["build_parser"]().parse_args(argv)
elif callable(namespace.get("parse_args")):
    parse = namespace["parse_args"]
else:
    parse = None
results = []
for argv in json.loads(sys.argv[2]):
    if parse is None:
        results.append(None)
        continue
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parse(argv)
        results.append("")
    except SystemExit:
        results.append(stderr.getvalue() or "parse_args exited")
print(json.dumps(results))
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


@functools.cache
def help_text(script: Path) -> str:
    result = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{script.name} --help failed:\n{result.stderr[-3000:]}"
    return result.stdout


def test_entry_points_exist(rendered):
    missing = sorted({str(path.relative_to(REPO)) for _, _, path, _ in job_commands(rendered) if not path.is_file()})
    assert not missing, f"manifests name entry points that are not in the repo: {missing}"


@pytest.mark.slow
def test_entry_points_accept_their_arguments(rendered):
    commands = job_commands(rendered)
    by_script: dict[Path, list[tuple[str, list[str]]]] = {}
    for overlay, job, path, args in commands:
        by_script.setdefault(path, []).append((f"{overlay}/{job}", args))
    problems = []
    for path, uses in by_script.items():
        if not path.is_file():
            pytest.fail(f"{path.relative_to(REPO)} is not in the repo")
        text = help_text(path)
        for where, args in uses:
            flags = {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}
            problems += [f"{where}: {flag} not in {path.name} --help"
                         for flag in sorted(flags) if not re.search(rf"{re.escape(flag)}\b", text)]
        result = subprocess.run(
            [sys.executable, "-c", PARSE_WITH_SCRIPT_PARSER, str(path), json.dumps([a for _, a in uses])],
            cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"loading {path.name} failed:\n{result.stderr[-3000:]}"
        verdicts = json.loads(result.stdout.strip().splitlines()[-1])
        problems += [f"{where}: {path.name} rejects its arguments: {verdict}"
                     for (where, _), verdict in zip(uses, verdicts) if verdict]
    assert not problems, "\n".join(problems)
