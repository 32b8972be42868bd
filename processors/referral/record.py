"""The referral record of one customer (``CustomerState.referral``) and its wire form.

One record holds both sides a customer can be on: the *referred* side (the claim their
own first qualifying purchase made, and what became of it) and the *referrer* side (the
referrals they were rewarded for). ``None`` for every customer the programme never touched,
so the stored state of everybody else is what it was before the programme existed.
"""

from __future__ import annotations

import zlib
from typing import Any, NamedTuple

from processors.errors import WireError

# the referred side's status
NONE, CLAIMED, REWARDED, REFUSED, CLAWED = 0, 1, 2, 3, 4
STATUS_NAMES = (None, "claimed", "rewarded", "refused", "clawed_back")


class Rewarded(NamedTuple):
    """A referral the referrer was rewarded for (the referrer side)."""

    at: int  # the qualifying purchase's time
    key: int  # 32-bit key of the referred customer's id (``key32``)
    points: int  # credited to the referrer; 0 once taken back


class ReferralState(NamedTuple):
    # the referred side: this customer's own qualifying purchase
    status: int = NONE
    order_id: str | None = None  # the qualifying order
    at: int = 0  # its time (ms)
    paid: int = 0  # its amount, reporting minor units
    refunded: int = 0  # refunded of it so far, reporting minor units
    credited: int = 0  # the welcome bonus credited (points; 0: none, or taken back)
    # the referrer side
    rewarded: int = 0  # referrals rewarded, ever
    clawed: int = 0  # of those, taken back
    recent: tuple[Rewarded, ...] = ()  # sorted; within the cap / return-window horizon


EMPTY = ReferralState()


def key32(customer_id: str) -> int:
    """A 32-bit key of a customer id (CRC-32, like loyalty's order keys: stable across
    processes; a collision among one referrer's few recent referrals is negligible)."""
    return zlib.crc32(customer_id.encode())


def to_wire(r: ReferralState) -> list[Any]:
    """``[status, order_id, at, paid, refunded, credited, rewarded, clawed, recent]`` with
    ``recent`` flat triples ``at, key, points``."""
    return [r.status, r.order_id, r.at, r.paid, r.refunded, r.credited, r.rewarded, r.clawed,
            [x for e in r.recent for x in e]]


def from_wire(value: Any) -> ReferralState:
    if type(value) is not list or len(value) != 9:
        raise WireError(f"state field 'ref': expected a list of 9 items, got {value!r:.80}")
    status, order_id, *numbers, flat = value
    if type(status) is not int or not NONE <= status <= CLAWED:
        raise WireError(f"state field 'ref': status must be 0..4, got {status!r:.20}")
    if order_id is not None and type(order_id) is not str:
        raise WireError(f"state field 'ref': order_id must be a string or null, got "
                        f"{order_id!r:.40}")
    if any(type(n) is not int or n < 0 for n in numbers):
        raise WireError(f"state field 'ref': expected non-negative integers, got {numbers!r:.80}")
    if (type(flat) is not list or len(flat) % 3
            or any(type(x) is not int or x < 0 for x in flat)):
        raise WireError(f"state field 'ref': recent must be a flat list of non-negative "
                        f"integer triples, got {flat!r:.60}")
    recent = tuple(Rewarded(*flat[i:i + 3]) for i in range(0, len(flat), 3))
    if list(recent) != sorted(recent):
        raise WireError("state field 'ref': recent must be sorted")
    at, paid, refunded, credited, rewarded, clawed = numbers
    return ReferralState(status, order_id, at, paid, refunded, credited, rewarded, clawed,
                         recent)
