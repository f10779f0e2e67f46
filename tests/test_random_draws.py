"""Every seeded random draw and every tensor factory on the training path names its device.

A draw such as `torch.rand((), generator=g)` runs on the CPU and raises when `g` is a CUDA generator
(the training loop builds its generators on the training device); a factory such as
`torch.zeros(n)` inside a step makes a CPU tensor that meets CUDA tensors a line later. Neither
shows on a machine without a GPU, so this scans the source (AST):
- a creation draw that takes `generator=` must also take `device=`, and draws that cannot take a
  device (bernoulli, multinomial, normal on tensors, in-place `x.normal_`) must not take a
  generator at all: draw with a creation function on the generator's device instead;
- in training/, objectives/, models/ and the batch and graph code they call, every `torch.zeros /
  ones / full / empty / arange / tensor / as_tensor / ...` takes `device=` (derive it from an
  input: `device=x.device`, or use `x.new_zeros`, `torch.zeros_like(x)`), except in a module's
  `__init__` (parameters and buffers move with the module's `.to(device)`), inside an expression
  moved with `(...).to(device)`, and in the functions of HOST_ONLY, which build or work on CPU
  tensors by design, each with its reason;
- every `torch.Generator(...)` is given its device.
benchmarks/gpu_check.py runs the same paths on a GPU when one is lent (docs/gpu.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "atomforge"
CREATION = {"rand", "randn", "randint", "randperm"}  # torch.<name>(..., generator=g, device=g.device)
NO_DEVICE = {"bernoulli", "multinomial", "normal", "poisson", "rand_like", "randn_like", "randint_like",
             "normal_", "uniform_", "bernoulli_", "random_", "exponential_", "geometric_", "cauchy_",
             "log_normal_"}
FACTORIES = {"zeros", "ones", "full", "empty", "arange", "linspace", "logspace", "eye", "tensor", "as_tensor",
             "rand", "randn", "randint", "randperm", "scalar_tensor", "sparse_coo_tensor"}
TRAINING_PATH = ("training", "objectives", "models", "batch.py", "graph.py")
HOST_ONLY = {  # "file:function" -> why its tensors are CPU tensors on purpose
    "batch.py:structure_data": "builds one structure's Data from host arrays; batches move with batch_to",
    "graph.py:unsafe_atoms": "works on .cpu() copies of its inputs (bincount/scatter bookkeeping); "
                             "regraph moves the mask to the batch's device",
}


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


def _torch_calls(tree: ast.AST):
    """(enclosing function name, call, moved) for every `torch.<name>(...)` call ('<module>' at top
    level); moved: the call is inside an expression `(...).to(...)`, so its value lands on that device."""
    def visit(node, function, moved):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                    and isinstance(child.func.value, ast.Name) and child.func.value.id == "torch"):
                yield function, child, moved
            receiver_of_to = isinstance(node, ast.Attribute) and node.attr == "to" and child is node.value
            yield from visit(child, inner, moved or receiver_of_to)
    yield from visit(tree, "<module>", False)


def factories_without_device(root: Path, parts=TRAINING_PATH, host_only=HOST_ONLY) -> list[str]:
    """'file:line function call' for each factory or generator under `root`'s `parts` that does not
    name its device (outside `__init__` and the host-only functions)."""
    paths = sorted(p for part in parts for p in ((root / part).rglob("*.py") if (root / part).is_dir() else [root / part])
                   if p.exists())
    problems = []
    for path in paths:
        relative = str(path.relative_to(root))
        for function, call, moved in _torch_calls(ast.parse(path.read_text(), str(path))):
            name, keywords = call.func.attr, {k.arg for k in call.keywords}
            where = f"{relative}:{call.lineno} {function} {ast.unparse(call)[:80]}"
            if name == "Generator" and not call.args and "device" not in keywords:
                problems.append(f"{where} (a generator on the default device)")
            elif (name in FACTORIES and "device" not in keywords and not moved and function != "__init__"
                  and f"{relative}:{function}" not in host_only):
                problems.append(where)
    return problems


def test_every_seeded_draw_names_its_device():
    assert seeded_draws_without_device(PACKAGE) == []


def test_every_factory_on_the_training_path_names_its_device():
    assert factories_without_device(PACKAGE) == []


def test_the_host_only_functions_exist():
    for key in HOST_ONLY:
        file, function = key.split(":")
        assert f"def {function}(" in (PACKAGE / file).read_text(), f"HOST_ONLY names {key}, which is gone"


def test_the_scan_flags_what_it_must(tmp_path):
    (tmp_path / "draws.py").write_text(
        "torch.rand((), generator=g)\n"                      # flagged: CPU draw
        "torch.rand((), generator=g, device=g.device)\n"     # fine
        "torch.randperm(5, generator=g, device=g.device)\n"  # fine
        "x.normal_(generator=g)\n"                           # flagged: cannot take a device
        "torch.rand(3)\n")                                   # fine: unseeded
    assert [p.split()[0] for p in seeded_draws_without_device(tmp_path)] == ["draws.py:1", "draws.py:4"]


def test_the_factory_scan_flags_what_it_must(tmp_path):
    (tmp_path / "step.py").write_text(
        "class Head:\n"
        "    def __init__(self):\n"
        "        self.scale = torch.ones(3)\n"                     # fine: a buffer, moves with .to()
        "    def forward(self, x):\n"
        "        a = torch.zeros(x.shape[0])\n"                    # flagged: CPU tensor in a step
        "        b = torch.zeros(x.shape[0], device=x.device)\n"   # fine
        "        c = x.new_zeros(3) + torch.zeros_like(x)\n"       # fine: derived from x
        "        g = torch.Generator()\n"                          # flagged: default device
        "        h = torch.Generator(x.device)\n"                  # fine
        "        d = torch.cat([torch.arange(3), x]).to(x.device)\n"  # fine: moved to x's device
        "        return torch.tensor([1.0])\n"                     # flagged
        "def host(rows):\n"
        "    return torch.as_tensor(rows)\n")                      # fine: listed as host-only
    found = factories_without_device(tmp_path, parts=("step.py",), host_only={"step.py:host": "test"})
    assert [p.split()[0] for p in found] == ["step.py:5", "step.py:8", "step.py:11"]
