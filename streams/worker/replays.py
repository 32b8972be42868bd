"""Loading history into a running system: replay records, their clock, their end marker.

Theory of operation (README "Time"):

* ``pulse replay`` sends its rows merged in event-time order. Every record carries the
  header ``pulse.replay`` = the replay's id. After the last row it sends an *end marker* to
  every partition of every input topic: a control record (header ``pulse.control`` =
  ``replay_end``, JSON value ``{"control": "replay_end", "replay_id": ..., "topics": [...],
  "end_ms": ...}``). Kafka keeps each topic partition in order, so a partition has seen all
  of the replay once the marker has arrived on every listed topic.
* **Replay clock.** The newest event time a partition applied from replay R is R's clock
  there. A customer whose latest event came from R is *scheduled on R*: its time-driven
  changes (expiry, downgrades, silence alerts) wait for R's clock minus the lateness, not
  for the live clock, so its history plays out as it would in an empty system instead of
  being expired at today's date while its later history is still on the way. Its schedule
  lives in its own sorted set (``Keys.replay_due``), written in the shard's atomic commit.
* **End.** When R's marker has arrived on every listed topic of a partition, R ends there:
  its schedule is merged into the live one in the same commit, so what is still due fires
  at once at the event times it was due (marked backfill). A replay that sends nothing more
  for ``replay_idle_end_s`` (a ``pulse replay`` killed before its marker) ends the same way,
  with a warning.
* **Outcomes.** Per replay and partition, a hash counts what the worker did with its
  records (applied, duplicate, dead-lettered by reason) and whether R ended there, so that
  ``pulse replay --wait`` reports the worker's outcomes, not the file's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

HEADER_REPLAY = "pulse.replay"
HEADER_CONTROL = "pulse.control"
HEADER_BACKFILL = "pulse.backfill"
REPLAY_END = "replay_end"
OUTCOME_TTL_S = 7 * 24 * 3600  # how long a replay's outcome counters are kept after its end


class BadControl(ValueError):
    """A control record we cannot use (dead-lettered as ``invalid_control``)."""


@dataclass(frozen=True)
class ReplayEnd:
    replay_id: str
    topics: tuple[str, ...]
    end_ms: int


def end_marker(replay_id: str, topics: list[str], end_ms: int
               ) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of replay ``replay_id``'s end marker."""
    value = orjson.dumps({"control": REPLAY_END, "replay_id": replay_id,
                          "topics": sorted(topics), "end_ms": end_ms})
    return value, [(HEADER_CONTROL, REPLAY_END.encode()), (HEADER_REPLAY, replay_id.encode())]


async def send_end_marker(out: Any, topics: list[str], partitions: int, replay_id: str,
                          end_ms: int) -> None:
    """After a replay's records (flushed first: each topic partition keeps its order), its
    end marker on every partition of every input topic, through a ``BatchProducer``."""
    await out.flush()
    value, marker = end_marker(replay_id, topics, end_ms)
    for topic in topics:
        for p in range(partitions):
            await out.send(topic, b"", value, partition=p, headers=marker)
    await out.flush()


def parse_control(value: bytes | None) -> ReplayEnd:
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise BadControl(f"control record is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("control") != REPLAY_END:
        raise BadControl("control record is not a replay_end marker")
    rid, topics, end = doc.get("replay_id"), doc.get("topics"), doc.get("end_ms")
    if not isinstance(rid, str) or not rid or len(rid) > 200:
        raise BadControl("replay_end marker without a replay_id")
    if (not isinstance(topics, list) or not topics
            or not all(isinstance(t, str) and t for t in topics)):
        raise BadControl("replay_end marker without its list of topics")
    if type(end) is not int:
        raise BadControl("replay_end marker without an integer end_ms")
    return ReplayEnd(rid, tuple(topics), end)


def headers_of(headers: object) -> tuple[str | None, bool]:
    """(replay id, is a control record) from a record's headers."""
    rid, control = None, False
    for k, v in headers or ():  # type: ignore[attr-defined]
        if k == HEADER_REPLAY:
            try:
                rid = bytes(v).decode() or None
            except UnicodeDecodeError:
                rid = None
        elif k == HEADER_CONTROL:
            control = True
    return rid, control


@dataclass
class ShardReplays:
    """The replays a partition is in the middle of (persisted in the shard's fence hash)."""

    clocks: dict[str, int] = field(default_factory=dict)  # replay -> newest event time (ms)
    ended: dict[str, set[str]] = field(default_factory=dict)  # replay -> topics whose end arrived
    scheduled: dict[str, str] = field(default_factory=dict)  # customer -> replay it waits on
    last_seen: dict[str, float] = field(default_factory=dict)  # replay -> monotonic time

    CLOCK, ENDED = "r:", "re:"

    def fence_fields(self, rid: str) -> list[tuple[str, str | int]]:
        out: list[tuple[str, str | int]] = [(self.CLOCK + rid, self.clocks.get(rid, 0))]
        if self.ended.get(rid):
            out.append((self.ENDED + rid, ",".join(sorted(self.ended[rid]))))
        return out

    def read_fence(self, name: str, value: bytes) -> bool:
        """Take one fence field if it is ours."""
        if name.startswith(self.CLOCK):
            self.clocks[name[len(self.CLOCK):]] = int(value)
            return True
        if name.startswith(self.ENDED):
            self.ended[name[len(self.ENDED):]] = set(value.decode().split(","))
            return True
        return False

    def idle(self, now: float, limit: float, exclude: Iterable[str] = ()) -> list[str]:
        """The replays (not in ``exclude``) that sent nothing for ``limit`` seconds by
        monotonic ``now``: end them (a ``pulse replay`` that died before its end marker must
        not hold its customers forever). A replay not heard from yet on this worker (its
        clock read from the fence) counts from the first time it is asked about."""
        out = []
        for rid in self.clocks:
            seen = self.last_seen.setdefault(rid, now)
            if now - seen >= limit and rid not in exclude:
                out.append(rid)
        return out

    def copy(self) -> ShardReplays:
        return ShardReplays(dict(self.clocks), {k: set(v) for k, v in self.ended.items()},
                            dict(self.scheduled), dict(self.last_seen))
