"""`pulse replay` a CSV through the real engine, then `pulse customers export`: the values
match ones worked out by hand, and replaying the same file again changes nothing.

The commands run as real subprocesses (the CLI end to end) against the session's Tansu
broker and redis-server; the engine runs in-process.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from pathlib import Path

from streams.settings import Settings, to_env
from streams.worker.metrics import Metrics
from streams.worker.partitioning import owner
from streams.worker.topics import Topics
from tests.integration.helpers import counter_value, running_engine, wait_until

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "tests" / "fixtures" / "replay_purchases.csv"
VALID_ROWS = 7  # 8 rows; line 5 (42.505 EUR) is rejected by replay itself


async def pulse(settings: Settings, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.tools.cli", *args,
        cwd=ROOT, env={**os.environ, **to_env(settings)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def handled(metrics: Metrics, topic: str) -> float:
    return sum(counter_value(metrics, "pulse_events_total", topic=topic, outcome=o)
               for o in ("processed", "duplicate", "deadletter"))


# Worked out by hand from tests/fixtures/replay_purchases.csv, as of 2026-04-01T00:00:00Z,
# with the default rules (reporting currency EUR; USD 0.92, JPY 0.0061 EUR per unit).
EXPECTED = {
    "C-ANNA": {
        # 2 x 42.50 on 03-01 (identical rows: two purchases), 10.00 at 03-10T18:30+02:00
        # (= 16:30Z), a refund of 5.25 on 03-12T09:15Z.
        "first_purchase_at": "2026-03-01T00:00:00.000Z",
        "last_purchase_at": "2026-03-10T16:30:00.000Z",
        "max_event_at": "2026-03-12T09:15:00.000Z",
        "days_since_last_purchase": "21.3125",  # 03-10 -> 04-01 is 22 days; - 16.5 hours
        "purchase_count": "3",
        "refund_count": "1",
        "purchase_days": "2",
        "gross_spend": "95.00",
        "refunds": "5.25",
        "total_spend": "89.75",
        "average_order_value": "31.67",  # 95.00 / 3 = 31.666...
        "mean_interpurchase_gap_days": "9",
        # 30-day window = days 03-03 .. 04-01: the 03-10 purchase and the refund only
        "orders_30d": "1", "spend_30d": "10.00", "refunds_30d": "5.25", "net_spend_30d": "4.75",
        "orders_90d": "3", "spend_90d": "95.00", "net_spend_90d": "89.75",
    },
    "C-BEN": {
        # 1000 JPY (0 decimals) = 6.10 EUR on 03-15T09:00Z; 19.99 USD = 18.3908 -> 18.39 EUR
        # on 03-20.
        "first_purchase_at": "2026-03-15T09:00:00.000Z",
        "last_purchase_at": "2026-03-20T00:00:00.000Z",
        "days_since_last_purchase": "12",
        "purchase_count": "2",
        "purchase_days": "2",
        "total_spend": "24.49",
        "average_order_value": "12.24",  # 24.49 / 2 = 12.245: half to even
        "mean_interpurchase_gap_days": "5",
        "orders_30d": "2",
    },
    "C-CARL": {
        # 7.00 on 02-20; the 42.505 row was rejected.
        "first_purchase_at": "2026-02-20T00:00:00.000Z",
        "last_purchase_at": "2026-02-20T00:00:00.000Z",
        "days_since_last_purchase": "40",  # 02-20 -> 03-01 is 9 days (not a leap year) + 31
        "purchase_count": "1",
        "total_spend": "7.00",
        "average_order_value": "7.00",
        "mean_interpurchase_gap_days": "",
        "orders_30d": "0", "spend_30d": "0.00", "orders_90d": "1",
    },
}


async def test_replay_then_export_matches_hand_values_and_replay_is_idempotent(
        settings: Settings, tmp_path: Path) -> None:
    topic = Topics.from_settings(settings).purchases
    metrics = Metrics.create()
    async with running_engine(settings, metrics=metrics):
        code, out, err = await pulse(settings, "replay", str(FILE))
        assert code == 1, err  # one row rejected, the rest sent
        assert f"8 rows read, {VALID_ROWS} sent to {topic}, 1 rejected" in out
        assert "line 5: schema_violation: purchase.amount: '42.505'" in out
        await wait_until(lambda: handled(metrics, topic) >= VALID_ROWS, what="first replay")
        assert counter_value(metrics, "pulse_events_total", outcome="processed") == VALID_ROWS

        first = tmp_path / "first.csv"
        code, _, err = await pulse(settings, "customers", "export",
                                   "--as-of", "2026-04-01T00:00:00Z", "--output", str(first))
        assert code == 0, err
        rows = {r["customer_id"]: r for r in csv.DictReader(first.open(newline=""))}
        assert list(rows) == ["C-ANNA", "C-BEN", "C-CARL"]  # sorted by customer id
        for cid, expected in EXPECTED.items():
            assert {k: rows[cid][k] for k in expected} == expected, cid
            assert rows[cid]["as_of"] == "2026-04-01T00:00:00.000Z"

        # the same file again: same ids, so nothing changes (duplicates or too-late events)
        code, out, err = await pulse(settings, "replay", str(FILE))
        assert code == 1, err
        await wait_until(lambda: handled(metrics, topic) >= 2 * VALID_ROWS, what="second replay")
        assert counter_value(metrics, "pulse_events_total", outcome="processed") == VALID_ROWS
        code, again, err = await pulse(settings, "customers", "export",
                                       "--as-of", "2026-04-01")  # a date: midnight UTC
        assert code == 0, err
        assert again == first.read_bytes().decode()

        code, jsonl, err = await pulse(settings, "customers", "export", "--format", "jsonl",
                                       "--as-of", "2026-04-01T02:00:00+02:00")
        assert code == 0, err
        objs = [json.loads(line) for line in jsonl.splitlines()]
        assert [o["customer_id"] for o in objs] == ["C-ANNA", "C-BEN", "C-CARL"]
        assert (objs[0]["total_spend"], objs[0]["days_since_last_purchase"]) == ("89.75", 21.3125)
        assert objs[2]["mean_interpurchase_gap_days"] is None

        # one customer: readable (as of the partition clock by default: in event mode the
        # newest event applied on C-BEN's partition, as GET /customers/{id}), JSON, unknown
        code, text, err = await pulse(settings, "customer", "C-BEN")
        assert code == 0, err
        same_partition = [r["max_event_at"] for cid, r in rows.items()
                          if owner(cid, settings.partitions) == owner("C-BEN", settings.partitions)]
        assert f"as of {max(same_partition)} (the partition clock, PULSE_CLOCK=event" in text
        assert "  total_spend:" in text and "24.49 EUR" in text
        code, row, err = await pulse(settings, "customer", "C-ANNA", "--json",
                                     "--as-of", "2026-04-01")
        assert code == 0, err
        assert json.loads(row)["customer"] == objs[0]  # the row in the subject-access document
        code, _, err = await pulse(settings, "customer", "C-NOBODY")
        assert code == 1
        assert "unknown customer 'C-NOBODY'" in err

    header = next(csv.reader(io.StringIO(again)))
    assert header[:4] == ["customer_id", "as_of", "max_event_at", "reporting_currency"]
