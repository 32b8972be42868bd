"""Historical dates through the real broker and Redis: `pulse replay` of rows from
1970-01-01T00:00:00Z and 1989, then `pulse customers export --as-of` / `pulse customer
--as-of` at those dates; a time before 1970 is refused with the codec's message."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from streams.settings import Settings
from streams.worker.metrics import Metrics
from streams.worker.topics import Topics
from tests.integration.helpers import counter_value, running_engine, wait_until
from tests.integration.test_replay_export import handled, pulse

ROWS = """customer_id,occurred_at,amount
H-EPOCH,1970-01-01,10.00
H-EPOCH,1970-01-01T12:00:00+01:00,5.00
H-OLD,1989-12-31,20.00
H-OLD,1989-12-31T23:59:59.999Z,-2.50
H-OLD,1969-12-31,1.00
"""


async def test_history_from_1970_is_replayed_and_exported(settings: Settings,
                                                         tmp_path: Path) -> None:
    f = tmp_path / "old.csv"
    f.write_text(ROWS)
    topic = Topics.from_settings(settings).purchases
    metrics = Metrics.create()
    async with running_engine(settings, metrics=metrics):
        code, out, err = await pulse(settings, "replay", str(f))
        assert code == 1, err  # the 1969 row is rejected, the rest sent
        assert f"5 rows read, 4 sent to {topic}, 1 rejected" in out
        assert "line 6: schema_violation: purchase.occurred_at: must not be before " \
            "1970-01-01T00:00:00Z" in out
        await wait_until(lambda: handled(metrics, topic) >= 4, what="4 events")
        assert counter_value(metrics, "pulse_events_total", outcome="processed") == 4

    code, text, err = await pulse(settings, "customers", "export", "--as-of", "1990-01-01")
    assert code == 0, err
    rows = {r["customer_id"]: r for r in csv.DictReader(text.splitlines())}
    epoch, old = rows["H-EPOCH"], rows["H-OLD"]
    assert (epoch["first_purchase_at"], epoch["last_purchase_at"], epoch["max_event_at"]) == (
        "1970-01-01T00:00:00.000Z", "1970-01-01T11:00:00.000Z", "1970-01-01T11:00:00.000Z")
    assert (epoch["purchase_count"], epoch["purchase_days"], epoch["total_spend"]) == (
        "2", "1", "15.00")
    assert (old["first_purchase_at"], old["refund_count"], old["total_spend"]) == (
        "1989-12-31T00:00:00.000Z", "1", "17.50")
    assert (old["days_since_last_purchase"], old["orders_30d"], old["as_of"]) == (
        "1", "1", "1990-01-01T00:00:00.000Z")

    # as of the epoch itself: both purchases are on day 0, inside every window
    code, row, err = await pulse(settings, "customer", "H-EPOCH", "--json",
                                 "--as-of", "1970-01-01T00:00:00Z")
    assert code == 0, err
    got = json.loads(row)["customer"]  # the row in the subject-access document
    assert (got["as_of"], got["orders_30d"], got["spend_30d"]) == (
        "1970-01-01T00:00:00.000Z", 2, "15.00")
    code, text, err = await pulse(settings, "customer", "H-EPOCH")
    assert code == 0, err
    assert "as of 1970-01-01T11:00:00.000Z (the partition clock, PULSE_CLOCK=event" in text

    code, _, err = await pulse(settings, "customers", "export", "--as-of", "1969-12-31")
    assert code == 2
    assert "--as-of: must not be before 1970-01-01T00:00:00Z" in err
