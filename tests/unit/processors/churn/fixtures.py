"""Histories for the churn fit's tests: purchases drawn from the MBG/NBD process, in the
replay CSV format."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

from processors.churn_fit import Params
from processors.timeutil import DAY_MS
from schemas.codec import format_time

T0 = 1_704_067_200_000  # 2024-01-01


def history_file(path: Path, truth: Params, n: int, days: int, seed: int,
                  value_effect: float = 0.0) -> None:
    """An MBG/NBD history in the replay CSV format: first purchases over the first 90 days.
    With ``value_effect``, each customer spends about their own value a visit (lognormal
    around 30.00) and their chance to drop out after a purchase has its log-odds lowered by
    ``value_effect * ln(value / 30)``: spend per purchase day predicts coming back."""
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["customer_id", "occurred_at", "amount"])
        for i in range(n):
            start = rng.uniform(0, 90)
            lam = rng.gammavariate(truth.r, 1 / truth.alpha)
            p = rng.betavariate(truth.a, truth.b)
            value = 10.0
            if value_effect:
                value = math.exp(rng.gauss(math.log(30), 0.7))
                lo = math.log(p / (1 - p)) - value_effect * math.log(value / 30)
                p = min(max(1 / (1 + math.exp(-lo)), 0.001), 0.999)
            t = start
            while True:
                ms = T0 + int(t * DAY_MS)
                amount = value * math.exp(rng.gauss(0, 0.2)) if value_effect else value
                w.writerow([f"c{i}", format_time(ms), f"{amount:.2f}"])
                if rng.random() < p:
                    break
                t += rng.expovariate(lam)
                if t >= days:
                    break
