"""The KPI families a worker exports (streams/worker/kpis.py), without Redis: names, labels,
zero-filling, units, and the round trip scrape -> counts -> the same KPIs."""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from processors import kpi
from processors.rules import DEFAULT_RULES
from streams.worker import kpis
from streams.worker.kpis import counts_from_scrape, exported_names, families
from streams.worker.partitioning import owner
from tests.kpi_history import A, at, history
from tests.unit.processors.test_kpi import run


def samples(fams: list) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for fam in fams:
        for s in fam.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def test_families_are_the_declared_names_with_partition_labels() -> None:
    parts = {0: {("sv", "nps", "promoter", "web_checkout"): 2, ("ord", "web"): 1,
                 ("tier", "gold"): 3, ("open", "urgent"): 1, ("frw", "email"): 5400_000,
                 ("rev", "web"): 1999, ("active",): 1, ("seg", "loyal"): 4}}
    fams = families(parts, DEFAULT_RULES, A, {0: {"purchases": A}})
    assert sorted(f.name for f in fams) == sorted(exported_names())
    got = samples(fams)
    # zero-filled: every class of a (kind, touchpoint) seen, and its score sum
    assert got["pulse_kpi_survey_responses"] == {
        (("class", c), ("kind", "nps"), ("partition", "0"), ("touchpoint", "web_checkout")): v
        for c, v in (("promoter", 2.0), ("passive", 0.0), ("detractor", 0.0))}
    assert got["pulse_kpi_survey_scores"] == {
        (("kind", "nps"), ("partition", "0"), ("touchpoint", "web_checkout")): 0.0}
    # purchase and ticket counters come as groups per channel; money and seconds in base units
    assert got["pulse_kpi_revenue"] == {(("channel", "web"), ("partition", "0")): 19.99}
    assert got["pulse_kpi_refunds"] == {(("channel", "web"), ("partition", "0")): 0.0}
    assert got["pulse_kpi_first_response_wait_seconds"] == {
        (("channel", "email"), ("partition", "0")): 5400.0}
    assert got["pulse_kpi_sla_deadlines"] == {(("channel", "email"), ("partition", "0")): 0.0}
    # always present per partition, even when zero
    for name in ("pulse_kpi_new_customers", "pulse_kpi_lost_customers", "pulse_kpi_customers",
                 "pulse_kpi_points_outstanding", "pulse_kpi_points_redeemed"):
        assert got[name] == {(("partition", "0"),): 0.0}
    assert got["pulse_kpi_customers_by_tier"] == {(("partition", "0"), ("tier", "gold")): 3.0}
    assert got["pulse_kpi_customers_by_segment"] == {
        (("partition", "0"), ("segment", "loyal")): 4.0}
    assert got["pulse_kpi_window_seconds"] == {(): 30 * 86400.0}
    assert got["pulse_kpi_reporting_currency_info"] == {(("currency", "EUR"),): 1.0}
    assert got["pulse_kpi_as_of_timestamp_seconds"] == {(): A / 1000}
    assert got["pulse_applied_event_time_seconds"] == {
        (("partition", "0"), ("topic", "purchases")): A / 1000}
    # no customer id, no high-cardinality label anywhere
    labels = {k for per in got.values() for key in per for k, _ in key}
    assert labels <= {"partition", "kind", "class", "touchpoint", "channel", "tier", "level",
                      "priority", "currency", "topic", "segment"}


def test_a_counter_of_another_version_is_skipped() -> None:
    got = samples(families({1: {("zzz", "x"): 1, ("ord",): 4}}, DEFAULT_RULES, None))
    assert "zzz" not in got and "pulse_kpi_orders" not in got
    assert "pulse_kpi_as_of_timestamp_seconds" not in got


def test_scrape_of_several_partitions_gives_back_the_same_kpis() -> None:
    """Split the hand-checked history over three partitions by customer, export, render as
    Prometheus text, parse it back: the KPIs equal those of one partition holding it all."""
    events = history()
    as_of = at(0, 4)
    whole = kpi.report(run(events)[1].counts(as_of), DEFAULT_RULES)
    parts = {}
    for p in range(3):
        mine = [e for e in events if owner(e.customer_id, 3) == p]
        parts[p] = run(mine)[1].counts(as_of)
    registry = CollectorRegistry()

    class Fixed:
        def collect(self):  # type: ignore[no-untyped-def]
            return families(parts, DEFAULT_RULES, as_of)

    registry.register(Fixed())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    scraped: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            scraped[s.name][tuple(sorted(s.labels.items()))] = s.value
    again = kpi.report(counts_from_scrape(scraped, DEFAULT_RULES), DEFAULT_RULES)
    assert again == whole
    assert again["nps"] == 37.5 and again["cltv"] == 58.8


def test_specs_cover_every_counter_kpi_writes() -> None:
    assert set(kpi.LABELS) == {s.key for s in kpis.SPECS}
    for s in kpis.SPECS:
        assert kpi.LABELS[s.key] == s.labels, s.key
