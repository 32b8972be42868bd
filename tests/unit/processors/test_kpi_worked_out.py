"""The KPI formulas on the hand-worked history of ``tests/kpi_history.py`` (its docstring
says how each expected value is worked out)."""

from __future__ import annotations

import pytest

from processors import kpi
from processors.rules import DEFAULT_RULES
from tests.kpi_history import EXPECTED, at, history
from tests.unit.processors.test_kpi import run


@pytest.fixture(scope="module")
def report() -> dict[str, float | None]:
    events = history()
    _, agg = run(events)
    as_of = max(e.occurred_at for e in events)
    assert as_of == at(0, 4)
    return kpi.report(agg.counts(as_of), DEFAULT_RULES)


@pytest.mark.parametrize("name,value", EXPECTED, ids=[n for n, _ in EXPECTED])
def test_kpi_worked_out_by_hand(report: dict[str, float | None], name: str,
                                value: float) -> None:
    assert report[name] == pytest.approx(value, rel=1e-12)


def test_the_components_behind_them() -> None:
    events = history()
    _, agg = run(events)
    c = agg.counts(max(e.occurred_at for e in events))
    assert (c[("start",)], c[("active",)], c[("new",)], c[("lost",)]) == (4, 5, 2, 2)
    assert (c[("ord", "store")], c[("ord", "web")]) == (4, 3)
    assert (c[("rev", "store")], c[("rev", "web")], c[("ref", "store")]) == (10200, 4500, 500)


def test_no_churn_gives_the_capped_lifespan() -> None:
    k = DEFAULT_RULES.kpi
    assert kpi.lifespan_days(0.0, k.window_days, k.lifespan_cap_days) == 3650.0
    assert kpi.lifespan_days(0.001, 30, 3650) == 3650.0  # 30 / 0.001 = 30000 > cap
    assert kpi.lifespan_days(None, 30, 3650) is None


def test_empty_denominators_give_no_value() -> None:
    r = kpi.report({}, DEFAULT_RULES)
    assert (r["nps"], r["csat"], r["ces"], r["retention_rate"], r["churn_rate"],
            r["average_order_value"], r["cltv"]) == (None,) * 7
    assert r["active_customers"] == 0
