"""The pure parts of `pulse deadletters` and the worker's rate-limited dead-letter log."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.structs import ConsumerRecord

from streams.tools.deadletters import DeadLetter, Filter, escape, plan, summary
from streams.worker.dlqlog import DeadLetterLog


def record(reason: str = "schema_violation", topic: str = "purchases", partition: int = 1,
           ts: int = 1_000, value: bytes = b'{"a":1}', key: bytes | None = b"C1",
           truncated: int | None = None, offset: int = 7) -> ConsumerRecord:
    headers = [("pulse.dlq.reason", reason.encode()), ("pulse.dlq.message", b"why"),
               ("pulse.dlq.topic", topic.encode()),
               ("pulse.dlq.partition", str(partition).encode()),
               ("pulse.dlq.offset", b"42"), ("pulse.dlq.timestamp", str(ts).encode())]
    if truncated is not None:
        headers.append(("pulse.dlq.truncated_from", str(truncated).encode()))
    return ConsumerRecord("deadletter", 0, offset, 5_000, 0, key, value, None, len(key or b""),
                          len(value), headers)


def test_a_dead_letter_is_read_from_its_headers() -> None:
    d = DeadLetter.from_record(record(value=b'{"x":"\xff\n\x1b[31m"}'))
    assert (d.reason, d.topic, d.partition, d.offset, d.timestamp) == (
        "schema_violation", "purchases", 1, 42, 1_000)
    row = d.as_dict()
    assert row["time"] == "1970-01-01T00:00:01.000Z"
    assert row["value_head"] == '{"x":"\\xff\\n\\x1b[31m"}'  # nothing a terminal interprets
    assert row["deadletter"] == {"partition": 0, "offset": 7, "timestamp": 5_000,
                                 "time": "1970-01-01T00:00:05.000Z"}
    assert "\x1b" not in d.line() and "purchases/1/42  why" in d.line()


def test_a_record_without_our_headers_is_still_listed() -> None:
    r = ConsumerRecord("deadletter", 2, 3, 9_000, 0, None, None, None, 0, 0, [])
    d = DeadLetter.from_record(r)
    assert (d.reason, d.topic, d.partition, d.timestamp, d.value, d.key) == (
        "unknown", "", -1, 9_000, b"", None)
    assert d.as_dict()["key"] is None


def test_filters_and_summary() -> None:
    letters = [DeadLetter.from_record(record(reason=r, topic=t, ts=ts)) for r, t, ts in [
        ("too_late", "purchases", 100), ("too_late", "surveys", 200),
        ("unknown_currency", "purchases", 300)]]
    assert [d.timestamp for d in letters if Filter(reason="too_late")(d)] == [100, 200]
    assert [d.timestamp for d in letters if Filter(topic="purchases")(d)] == [100, 300]
    assert [d.timestamp for d in letters if Filter(since=200, until=300)(d)] == [200]
    assert summary(letters) == "3 dead letters: too_late 2, unknown_currency 1"
    assert summary(letters[:1]) == "1 dead letter: too_late 1"
    assert summary([]) == "0 dead letters"


def test_redrive_plan_skips_truncated_and_unknown_sources() -> None:
    letters = [DeadLetter.from_record(r) for r in [
        record(), record(topic="surveys"), record(truncated=2_000_000),
        record(topic="elsewhere"), record(partition=9)]]
    todo, result = plan(letters, ["purchases", "surveys"], partitions=4)
    assert [d.topic for d in todo] == ["purchases", "surveys"]
    assert dict(result.sent) == {"purchases": 1, "surveys": 1}
    assert (result.truncated, result.unknown_source) == (1, 2)


def test_escape_keeps_text_readable() -> None:
    assert escape(b'{"id": "caf\xc3\xa9"}') == '{"id": "caf\\xc3\\xa9"}'
    assert escape(b"\x00'") == "\\x00'"


# -- the worker's log line -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = [r.getMessage() for r in caplog.records if r.name == "test.dlq"]
    caplog.clear()
    return out


def test_one_line_per_reason_per_interval_with_the_count_since(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    dl = DeadLetterLog(10.0, clock, logging.getLogger("test.dlq"))
    caplog.set_level(logging.WARNING, "test.dlq")
    dl.note("too_late", "purchases", 0, 1, "late 1")
    dl.note("unknown_currency", "purchases", 0, 2, "HUF")  # another reason: its own line
    assert lines(caplog) == [
        "dead-lettered 1 record as too_late, e.g. purchases/0/1: late 1",
        "dead-lettered 1 record as unknown_currency, e.g. purchases/0/2: HUF"]
    for i in range(500):
        clock.t += 0.01
        dl.note("too_late", "purchases", 0, 10 + i, f"late {i}")
    assert lines(caplog) == []  # 5 s: counted, not logged
    clock.t += 6
    dl.note("too_late", "surveys", 2, 99, "late again")
    assert lines(caplog) == [
        "dead-lettered 501 records as too_late in the last 11 s, e.g. surveys/2/99: late again"]
    dl.flush("too_late")  # nothing pending
    assert lines(caplog) == []


async def test_a_burst_that_stops_is_still_reported(caplog: pytest.LogCaptureFixture) -> None:
    dl = DeadLetterLog(0.2, logger=logging.getLogger("test.dlq"))
    caplog.set_level(logging.WARNING, "test.dlq")
    for i in range(3):
        dl.note("malformed_json", "purchases", 1, i, "bad")
    assert len(lines(caplog)) == 1
    for _ in range(50):  # the timer fires ~0.2 s after the first line
        await asyncio.sleep(0.05)
        if caplog.records:
            break
    assert lines(caplog) == [
        "dead-lettered 2 records as malformed_json in the last 0 s, e.g. purchases/1/2: bad"]
