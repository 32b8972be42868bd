"""The one base class of refused input: ``DomainError``.

Theory of operation: an input the domain refuses is data with a stable ``reason`` (a short
label: the dead-letter counter label) and a readable ``message``, never a crash, and never
retriable (the same input is refused again). Two kinds exist: ``schemas.codec.InvalidEvent``
(bytes that cannot become an event) and ``processors.errors.Rejected`` (a valid event the
customer state refuses). The base lives here, at the bottom of the import direction
(schemas <- processors <- streams), so that both can share it.
"""

from __future__ import annotations


class DomainError(Exception):
    """A refused input: ``reason`` (stable label) and ``message`` (readable)."""

    retriable = False

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
