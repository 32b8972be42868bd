"""The layer protocol: the one shape of every domain layer that rides on the customer state.

Theory of operation
-------------------
The customer state has a *base* (purchase facts, day windows, tickets, surveys, profile,
dedup, lateness: ``processors/customer.py`` and the per-kind change modules) and *layers*
on top: the points account (loyalty), the churn record, the engagement record, the KPI
increments. A layer never changes the base; it keeps at most one record in the state (the
``CustomerState`` field named by ``field``), and it answers five questions, with the same
signatures for every layer:

* ``on_event(before, after, event, rules, now)``: an event was accepted. ``before`` is the
  state before the event; ``after`` the state with the base changes and the records of the
  layers that come earlier in the registry already updated (so churn sees the new points
  account, and the KPIs see everything). ``now`` is the clock the event is applied with
  (the wall clock live, the replay's or the partition's event time otherwise).
* ``on_tick(before, after, rules, at)``: time passed to ``at`` (event time) with no event;
  the same ``before`` / ``after`` convention.
* ``next_due(state, rules)``: the event time at which ``on_tick`` next has something to do
  (or to look at again), or None. The engine ticks the customer at the minimum over layers.
* ``view_fields(state, rules, as_of)``: the layer's columns of the export row and of
  ``pulse customer`` (JSON-ready values only).
* ``to_wire(record, state)`` / ``from_wire(value, base)``: the record's compact form under
  the key ``wire_key`` of the stored state (``processors/wire.py``). ``base`` holds the
  state fields decoded so far (the base fields come first). A malformed value raises
  ``WireError``.

Both reactions return a ``Reaction``: the layer's new record (the *same object* when
nothing changed: the loop compares by identity, so an unchanged layer costs no copy), the
outputs for the output topics, and the KPI increments. A layer without a record (``field``
is None, e.g. the KPIs) returns ``record=None`` and has no wire form.

The registry (``processors/registry.py``) lists the layers in the order they run; adding a
layer is adding its module and one line there. Like bytewax's ``StatefulBatchLogic``
(on_batch / on_notify / notify_at / snapshot) with the state passed in and returned rather
than held, so every layer stays a pure function of (state, event or time, rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from processors.outputs import KpiDelta, Output

if TYPE_CHECKING:
    from processors.rules import Rules
    from processors.state import CustomerState
    from schemas.events import Event


class Reaction(NamedTuple):
    """What a layer did: its record (the same object when unchanged), outputs, KPI deltas."""

    record: Any = None
    outputs: tuple[Output, ...] = ()
    kpi: tuple[KpiDelta, ...] = ()


class Layer(Protocol):
    """One domain layer (see the module docstring)."""

    # read-only, so that a layer states them as plain class attributes in one line:
    # ``name, field, wire_key = "churn", "churn", "ch"``
    @property
    def name(self) -> str: ...  # "loyalty", "churn", ...: logs, errors, docs

    @property
    def field(self) -> str | None: ...  # the CustomerState field holding its record (or None)

    @property
    def wire_key(self) -> str | None: ...  # the record's key in the stored state (wire.py)

    def on_event(self, before: CustomerState, after: CustomerState, event: Event,
                 rules: Rules, now: int) -> Reaction: ...

    def on_tick(self, before: CustomerState, after: CustomerState, rules: Rules,
                at: int) -> Reaction: ...

    def next_due(self, state: CustomerState, rules: Rules) -> int | None: ...

    def view_fields(self, state: CustomerState, rules: Rules, as_of: int) -> dict[str, Any]: ...

    def to_wire(self, record: Any, state: CustomerState) -> Any: ...

    def from_wire(self, value: Any, base: Mapping[str, Any]) -> Any: ...
