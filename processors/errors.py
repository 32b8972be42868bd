"""Domain errors of the pure processors.

Theory of operation: a processor either returns a new value or raises one of these, and a
raise never changes anything (inputs are immutable, results are built before they are
returned). The shell turns ``Rejected`` into a dead letter with ``reason`` as the counter
label (``Rejected`` and the codec's ``InvalidEvent`` share the base ``DomainError``,
``schemas/errors.py``: a reason and a message); ``RulesError`` stops start-up with a
message that names the offending field; ``WireError`` means stored state bytes cannot be
decoded (corruption or a newer version).
"""

from __future__ import annotations

from schemas.errors import DomainError

# Rejection reasons (dead-letter counter labels). Keep this set small and stable.
UNKNOWN_CURRENCY = "unknown_currency"
TOO_LATE = "too_late"
INVALID = "invalid"
NOT_SUPPORTED = "not_supported"  # a valid record apply does not act on (an erasure: the shell)


class Rejected(DomainError):
    """A domain-invalid event. Never retriable: the same event is rejected again."""


class RulesError(ValueError):
    """A bad rules file. The message starts with the dotted field path, e.g.
    ``support.sla.urgent.first_response_hours: must be > 0, got -1``."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class WireError(ValueError):
    """Stored state bytes that ``processors.wire.loads`` cannot decode."""
