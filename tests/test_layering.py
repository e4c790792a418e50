"""The library's layers: a module imports only from its own layer or the ones below, and no import circle exists.

Imports inside functions count too: a lazy import hides a circle, it does not remove it.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Bottom to top. A module belongs to the first entry that is its name or a package above it.
LAYERS = [
    ("hf_transfer", "hf_transfer.config", "hf_transfer.io", "hf_transfer.console"),
    ("hf_transfer.metrics",),
    ("hf_transfer.targets",),
    ("hf_transfer.data",),
    ("hf_transfer.models",),
    ("hf_transfer.modalities",),
    ("hf_transfer.tasks",),
    ("hf_transfer.training",),
    ("hf_transfer.evaluation",),
    ("hf_transfer.publish",),
    ("hf_transfer.recipe", "hf_transfer.outputs"),
    ("hf_transfer.selection",),
    ("hf_transfer.recipes",),
    ("hf_transfer.cli",),
]


def layer_of(module: str) -> int:
    """The layer of `module`: its longest listed prefix wins (`hf_transfer.metrics.x` is in metrics, not the root)."""
    matches = [(len(name), i) for i, names in enumerate(LAYERS) for name in names
               if module == name or module.startswith(name + ".")]
    return max(matches)[1]


def library_modules() -> dict[str, Path]:
    files = {}
    for path in (ROOT / "hf_transfer").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in (ROOT / "recipes").glob("*.py"):
        files[f"hf_transfer.recipes.{path.stem}"] = path
    return files


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The library modules `path` imports (`from a.b import c` names `a.b.c` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                      for alias in node.names}
    return {name for name in found if name.split(".")[0] == "hf_transfer" and name in modules}


MODULES = library_modules()
GRAPH = {module: imports_of(path, set(MODULES)) for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_from_a_higher_layer(module):
    upward = sorted(name for name in GRAPH[module] if layer_of(name) > layer_of(module))
    assert not upward, f"{module} (layer {LAYERS[layer_of(module)][0]}) imports higher layers: {upward}"


def test_no_import_circle():
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for name in sorted(GRAPH[module]):
            if name != module:
                visit(name)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)


def test_the_checks_can_fail():
    assert layer_of("hf_transfer.cli") > layer_of("hf_transfer.selection.rank") > layer_of("hf_transfer.config")
    assert layer_of("hf_transfer.metrics.classification") == layer_of("hf_transfer.metrics")
    assert "hf_transfer.recipe" in GRAPH["hf_transfer.recipes.sentiment"]
