"""The commit frontier of one partition: at-least-once across endpoints.

A record read at offset o is handed to n endpoints (n may be 0: nobody wants it). The
partition's offset may be committed up to o + 1 only when every record at or below o is
finished by every endpoint it went to (delivered or dead-lettered). Endpoints finish in any
order, so the frontier is the first offset still pending. Pure: no Kafka, no clock.
"""

from __future__ import annotations

from collections import deque


class PartitionTrack:
    def __init__(self) -> None:
        self._order: deque[int] = deque()  # offsets read, oldest first
        self._remaining: dict[int, int] = {}
        self.frontier: int | None = None  # the offset to commit (next to read after it)
        self.revoked = False  # the partition went to another member: finish nothing more

    def add(self, offset: int, deliveries: int) -> None:
        """Record ``offset`` read, with ``deliveries`` still to finish (0: done already)."""
        if self._order and offset <= self._order[-1]:
            raise ValueError(f"offset {offset} after {self._order[-1]}: offsets must grow")
        self._order.append(offset)
        self._remaining[offset] = deliveries
        self._advance()

    def done(self, offset: int) -> None:
        """One delivery of the record at ``offset`` finished."""
        left = self._remaining[offset] - 1
        if left < 0:
            raise ValueError(f"offset {offset} finished more often than it was handed out")
        self._remaining[offset] = left
        self._advance()

    @property
    def pending(self) -> int:
        """Records read and not yet finished by every endpoint."""
        return len(self._order)

    def _advance(self) -> None:
        while self._order and self._remaining[self._order[0]] == 0:
            o = self._order.popleft()
            del self._remaining[o]
            self.frontier = o + 1
