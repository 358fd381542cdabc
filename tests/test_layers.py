"""The layers of src/vaerun/ are its folders, and imports only point down them: a module may import its own
package and the layers below, never one beside or above it. Each package's ``__init__`` only hands names on.
"""

import ast
from pathlib import Path

import pytest

import vaerun

SOURCE = Path(vaerun.__file__).parent
#: each layer and the layers it may import (its own package always)
MAY_IMPORT = {
    "core": set(),
    "search": {"core"},
    "models": {"core"},
    "data": {"core"},
    "evaluation": {"core", "models", "data", "search"},
    "training": {"core", "models", "data", "evaluation", "search"},
    "stages": {"core", "models", "data", "evaluation", "training", "search"},
    "api": {"core", "models", "data"},
    "cli": {"core", "evaluation", "models", "stages", "training", "search"},
}
MODULES = sorted(p for p in SOURCE.rglob("*.py") if "configs" not in p.relative_to(SOURCE).parts)


def layer_of(path: Path) -> str | None:
    parts = path.relative_to(SOURCE).parts
    return parts[0] if len(parts) > 1 else None  # None: vaerun/__init__.py, the package's front door


def imported_layers(path: Path) -> set[str]:
    """The layers a module imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "vaerun" and len(parts) > 1 and parts[1] in MAY_IMPORT:
                found.add(parts[1])
    return found


def test_every_module_is_in_a_layer():
    assert {layer_of(p) for p in MODULES} == {None, *MAY_IMPORT}
    assert [p.name for p in MODULES if layer_of(p) is None] == ["__init__.py"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_imports_point_down_the_layers(path):
    layer = layer_of(path)
    if layer is None:
        return
    upward = imported_layers(path) - MAY_IMPORT[layer] - {layer}
    assert not upward, f"{path.relative_to(SOURCE)} ({layer}) imports {sorted(upward)}"


@pytest.mark.parametrize(
    "path", [p for p in MODULES if p.name == "__init__.py"], ids=lambda p: str(p.relative_to(SOURCE))
)
def test_a_package_init_only_hands_names_on(path):
    if layer_of(path) is None:
        return  # vaerun/__init__.py hands its names on lazily, through a module __getattr__
    for node in ast.parse(path.read_text()).body:
        is_docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        is_all = isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__all__"]
        assert is_docstring or is_all or isinstance(node, ast.Import | ast.ImportFrom), (
            f"{path.relative_to(SOURCE)} defines {type(node).__name__} at line {node.lineno}"
        )
