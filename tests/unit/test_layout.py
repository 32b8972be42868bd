"""The import direction between folders and roles (README "Layout"): schemas <- processors
<- streams (shared modules <- worker <- tools and notifier).
An import against the direction fails here, naming the file and the module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.paths import ROOT

# package prefix -> prefixes of ours it must never import
FORBIDDEN = {
    "schemas": ("processors", "streams", "bench", "tests"),
    "processors": ("streams", "bench", "tests"),
    "streams.worker": ("streams.tools", "streams.notifier", "bench", "tests"),
    "streams.notifier": ("streams.tools", "bench", "tests"),  # may use the worker's admin, metrics
    "streams.tools": ("bench", "tests"),
}
SHARED = ("streams.settings", "streams.errors", "streams.kafka_client", "streams.redis_client",
          "streams.rules_file")


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


SOURCES = sorted(p for d in ("schemas", "processors", "streams") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path: Path) -> None:
    module = _module(path)
    owner = max((p for p in FORBIDDEN if _under(module, p)), key=len, default=None)
    wrong = [name for name in _imports(path) for bad in FORBIDDEN.get(owner or "", ())
             if _under(name, bad)]
    if _under(module, "streams") and not any(_under(module, p) for p in (
            "streams.worker", "streams.tools", "streams.notifier")):
        # the shared top of streams/ imports only other shared modules
        wrong += [n for n in _imports(path) if _under(n, "streams")
                  and not any(_under(n, s) for s in SHARED) and n != "streams"]
    assert not wrong, f"{module} imports {sorted(set(wrong))} against the layering"


def test_every_streams_module_has_a_role() -> None:
    top = sorted(p.stem for p in (ROOT / "streams").glob("*.py") if p.stem != "__init__")
    assert top == sorted(s.split(".")[1] for s in SHARED)
