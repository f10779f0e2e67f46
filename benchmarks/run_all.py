"""Run every benchmark in this folder in turn (`make bench`); each prints its table and writes bench_out/<name>.json."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("graphs", "readers", "preprocess", "models", "loader", "train")


def main() -> int:
    failed = []
    for name in ORDER:
        script = HERE / f"{name}.py"
        if not script.exists():
            continue
        print(f"\n=== benchmarks/{name}.py ===", flush=True)
        result = subprocess.run([sys.executable, str(script), "--json", f"bench_out/{name}.json"], cwd=HERE.parent)
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
