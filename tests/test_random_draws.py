"""Every seeded random draw in the package names its device, so a CUDA generator never meets a CPU draw.

A draw such as `torch.rand((), generator=g)` runs on the CPU and raises when `g` is a CUDA generator
(the training loop builds its generators on the training device). This scans the source (AST), so it
holds on a machine without a GPU: a creation draw that takes `generator=` must also take `device=`,
and draws that cannot take a device (bernoulli, multinomial, normal on tensors, in-place `x.normal_`)
must not take a generator at all: draw with a creation function on the generator's device instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "atomforge"
CREATION = {"rand", "randn", "randint", "randperm"}  # torch.<name>(..., generator=g, device=g.device)
NO_DEVICE = {"bernoulli", "multinomial", "normal", "poisson", "rand_like", "randn_like", "randint_like",
             "normal_", "uniform_", "bernoulli_", "random_", "exponential_", "geometric_", "cauchy_",
             "log_normal_"}


def seeded_draws_without_device(root: Path) -> list[str]:
    """'file:line call' for each seeded draw under `root` that does not say where it runs."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            keywords = {k.arg for k in node.keywords}
            if "generator" not in keywords:
                continue
            name = node.func.attr
            where = f"{path.relative_to(root)}:{node.lineno} {ast.unparse(node.func)}"
            if name in CREATION and "device" not in keywords:
                problems.append(where)
            elif name in NO_DEVICE:
                problems.append(f"{where} (cannot take device=)")
    return problems


def test_every_seeded_draw_names_its_device():
    assert seeded_draws_without_device(PACKAGE) == []


def test_the_scan_flags_what_it_must(tmp_path):
    (tmp_path / "draws.py").write_text(
        "torch.rand((), generator=g)\n"                      # flagged: CPU draw
        "torch.rand((), generator=g, device=g.device)\n"     # fine
        "torch.randperm(5, generator=g, device=g.device)\n"  # fine
        "x.normal_(generator=g)\n"                           # flagged: cannot take a device
        "torch.rand(3)\n")                                   # fine: unseeded
    assert [p.split()[0] for p in seeded_draws_without_device(tmp_path)] == ["draws.py:1", "draws.py:4"]
