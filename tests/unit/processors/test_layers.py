"""The layer protocol and registry (``processors/layer.py``, ``processors/registry.py``):
every registered layer has the protocol's shape, the loops in ``customer`` and ``wire``
see each of them, and ``processors/`` has no import circle."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys

import msgspec
import pytest

from processors import wire
from processors.customer import apply, next_due, tick, view
from processors.layer import Layer
from processors.registry import LAYERS
from processors.rules import DEFAULT_RULES
from processors.state import CustomerState
from processors.timeutil import DAY_MS
from schemas.events import Event
from tests.builders import customer, purchase, redemption, survey, ticket
from tests.paths import ROOT

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
BASE_KEYS = {"v", "c", "km", "d", "s", "cs", "ce", "ot", "ls", "pf", "m", "fp", "lp", "la",
             "ns", "na", "pc", "rc", "gs", "rf", "ad", "to", "tr", "td", "sb", "sa"}
METHODS = ("on_event", "on_tick", "next_due", "view_fields", "to_wire", "from_wire")


def test_the_registry_runs_loyalty_churn_engagement_referral_then_the_kpis() -> None:
    assert [layer.name for layer in LAYERS] == ["loyalty", "churn", "engagement", "referral",
                                                "kpi"]
    assert [layer.wire_key for layer in LAYERS if layer.wire_key] == ["ly", "ch", "en", "ref"]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.name)
def test_each_layer_has_the_protocols_shape(layer: Layer) -> None:
    for method in METHODS:
        want = [p.name for p in inspect.signature(getattr(Layer, method)).parameters.values()]
        got = [p.name for p in inspect.signature(getattr(layer, method)).parameters.values()]
        assert got == want[1:], f"{layer.name}.{method}{got}: the protocol says {want[1:]}"
    fields = CustomerState.__struct_fields__
    assert layer.field is None or layer.field in fields
    assert (layer.field is None) == (layer.wire_key is None)  # a record has a wire form
    assert layer.wire_key not in BASE_KEYS


def test_names_fields_and_wire_keys_are_unique() -> None:
    for attr in ("name", "field", "wire_key"):
        values = [getattr(layer, attr) for layer in LAYERS if getattr(layer, attr)]
        assert len(values) == len(set(values)), attr


def _history() -> list[Event]:
    return [
        purchase("p1", T0, 12_000),
        ticket("t1", T0 + DAY_MS, "T", "opened", "urgent"),
        survey("s1", T0 + 2 * DAY_MS, "nps", 3),
        purchase("p2", T0 + 30 * DAY_MS, 9_000),
        redemption("r1", T0 + 31 * DAY_MS, 5),
        # referred, but a customer already: the referral programme refuses (its record)
        customer("c1", T0 + 32 * DAY_MS, "signup", referred_by="c9"),
    ]


def _run() -> CustomerState:
    state = None
    for ev in _history():
        state = apply(state, ev, DEFAULT_RULES, ev.occurred_at).state
    assert state is not None
    return state


def test_every_record_layer_has_a_record_on_the_wire_and_in_the_view() -> None:
    state = _run()
    stored = msgspec.json.decode(wire.dumps(state))
    row = view(state, DEFAULT_RULES, T0 + 40 * DAY_MS)
    for layer in LAYERS:
        if layer.field is not None:
            assert getattr(state, layer.field) is not None
            assert layer.wire_key in stored
    assert list(stored)[-5:] == ["ly", "ch", "en", "ref", "pf"]  # records in registry order
    assert wire.loads(wire.dumps(state)) == state
    assert {"points_balance", "tier", "churn_score", "churn_level"} <= set(row)


def test_an_unchanged_record_is_not_copied() -> None:
    """A layer that returns its record unchanged costs no copy: the state holds the same
    object (a redemption carries no churn signal; a tick with nothing due is a no-op)."""
    state = _run()
    after = apply(state, redemption("r2", T0 + 33 * DAY_MS, 1), DEFAULT_RULES,
                  T0 + 33 * DAY_MS).state
    assert after.churn is state.churn
    due = next_due(state, DEFAULT_RULES)
    assert due is not None and due > T0 + 32 * DAY_MS
    assert tick(state, DEFAULT_RULES, due - 1).state is state


def test_next_due_is_the_earliest_of_the_layers() -> None:
    state = _run()
    dues = [d for d in (layer.next_due(state, DEFAULT_RULES) for layer in LAYERS)
            if d is not None]
    assert next_due(state, DEFAULT_RULES) == min(dues)


# -- no import circle (issue 13, point 2) ---------------------------------------------------


def _module_imports(path: str) -> set[str]:
    """Every ``processors.*`` module a processors module imports, TYPE_CHECKING ones too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            found |= {n for n in names if n.startswith("processors.")}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("processors.")}
    return found


def test_processors_has_no_import_circle() -> None:
    files = sorted((ROOT / "processors").rglob("*.py"))
    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in files}
    graph = {m: {i for i in _module_imports(str(p.relative_to(ROOT))) if i in mods and i != m}
             for m, p in mods.items()}
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, f"import circle: {' -> '.join((*path[path.index(m):], m))}"
        if m in done:
            return
        for n in sorted(graph[m]):
            visit(n, (*path, m))
        done.add(m)

    for m in sorted(graph):
        visit(m, ())


def test_the_state_imports_no_layer_logic_and_its_annotations_resolve() -> None:
    code = ("import sys, inspect, msgspec, processors.state as s\n"
            "msgspec.inspect.type_info(s.CustomerState)\n"
            "inspect.signature(s.CustomerState)\n"
            "print(*sorted(m for m in sys.modules if m.startswith('processors.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    loaded = set(out.split())
    records = {m for m in loaded if m.rsplit(".", 1)[-1] in ("record", "records")}
    packages = {m.rsplit(".", 1)[0] for m in records}  # their __init__ runs first
    base = {"processors.state", "processors.money", "processors.timeutil", "processors.rules",
            "processors.errors"}
    assert loaded <= base | records | packages, sorted(loaded - base - records - packages)
