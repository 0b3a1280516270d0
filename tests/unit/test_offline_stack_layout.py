"""The offline stack (local/devstack) is emulation only: it imports nothing of the example, the
demo or the benchmarks, and of the deploy tools only ``params`` (``up`` reads config.json as
``make deploy`` does); each of its sub-packages says which AWS service it stands in for."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVSTACK = ROOT / "local" / "devstack"
EXAMPLE = ROOT / "example"
# What is not emulation: the example's package and scripts (the demo among them), the benchmarks
# (with the load test's moto patches) and the deploy tools.
NOT_EMULATION = {
    "bench",
    "tools",
    *(path.stem for path in EXAMPLE.glob("*.py")),
    *(path.name for path in EXAMPLE.iterdir() if (path / "__init__.py").exists()),
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module == "tools" and [alias.name for alias in node.names] == ["params"]:
                continue  # config.json to template parameters, one mapping for both worlds
            roots.add(node.module.split(".")[0])
    return roots


def test_devstack_imports_nothing_that_is_not_emulation() -> None:
    assert {"demo", "onboarding_ble", "device"} <= NOT_EMULATION  # the list means something
    found = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & NOT_EMULATION)
        for path in sorted(DEVSTACK.rglob("*.py"))
    }
    assert {name: roots for name, roots in found.items() if roots} == {}


def test_each_sub_package_says_which_aws_service_it_stands_in_for() -> None:
    packages = sorted(path.parent for path in DEVSTACK.glob("*/__init__.py"))
    assert {path.name for path in packages} >= {"cloudformation", "awslambda", "apigateway", "iot"}
    for package in packages:
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8")))
        assert doc and ("Stands in for" in doc or "moto" in doc), package.name
