"""The referral record's wire form and the layer's columns."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.errors import WireError
from processors.referral.layer import LAYER
from processors.referral.record import (
    CLAWED,
    REWARDED,
    ReferralState,
    Rewarded,
    from_wire,
    to_wire,
)
from processors.rules import DEFAULT_RULES
from processors.timeutil import DAY_MS
from tests.unit.processors.referral.fixtures import state

_n = st.integers(0, 2**62)
records = st.builds(
    ReferralState, st.integers(0, CLAWED), st.none() | st.text(min_size=1, max_size=20),
    _n, _n, _n, _n, _n, _n,
    st.lists(st.builds(Rewarded, _n, st.integers(0, 2**32 - 1), _n)).map(
        lambda xs: tuple(sorted(xs))))


@given(records)
def test_the_wire_form_round_trips(r: ReferralState) -> None:
    assert from_wire(to_wire(r)) == r
    assert LAYER.from_wire(LAYER.to_wire(r, state("c")), {}) == r


@pytest.mark.parametrize("bad", [
    None, [], [0] * 8, [5, None, 0, 0, 0, 0, 0, 0, []], [0, 7, 0, 0, 0, 0, 0, 0, []],
    [0, None, -1, 0, 0, 0, 0, 0, []], [0, None, 0, 0, 0, 0, 0, 0, [1, 2]],
    [0, None, 0, 0, 0, 0, 0, 0, [5, 1, 1, 4, 1, 1]], [0, None, 0, 0, 0, 0, 0, 0, "x"],
    [True, None, 0, 0, 0, 0, 0, 0, []],
])
def test_a_malformed_record_is_a_wire_error(bad: Any) -> None:
    with pytest.raises(WireError, match="state field 'ref'"):
        from_wire(bad)


def test_the_columns() -> None:
    t = 1_704_067_200_000
    assert LAYER.view_fields(state("c"), DEFAULT_RULES, t) == {
        "referral_status": None, "referral_order_id": None, "referral_bonus_points": 0,
        "referrals_rewarded": 0, "referrals_clawed_back": 0,
        "referrals_rewarded_in_period": 0}
    r = ReferralState(REWARDED, "o1", t, 2500, 0, 250, 3, 1,
                      (Rewarded(t - 400 * DAY_MS, 1, 500), Rewarded(t - DAY_MS, 2, 0),
                       Rewarded(t, 3, 500)))
    assert LAYER.view_fields(state("c", referral=r), DEFAULT_RULES, t) == {
        "referral_status": "rewarded", "referral_order_id": "o1",
        "referral_bonus_points": 250, "referrals_rewarded": 3, "referrals_clawed_back": 1,
        "referrals_rewarded_in_period": 2}
