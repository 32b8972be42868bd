"""``pulse fit churn``: the purchase model's parameters fitted to the retailer's own history.

Theory of operation
-------------------
1. Read the history files and replay them up to the cutoff exactly as ``pulse evaluate
   churn`` does (streams/tools/evaluate.py: ``read_histories``, ``replay``); the cutoff defaults
   to just after the newest event.
2. Summarise each customer who bought before the cutoff as the churn score does
   (``processors.churn.purchase_summary``: repeat purchase days, t_x, T in days) and fit
   ``churn.model``'s ``r, alpha, a, b`` by maximum likelihood (processors/churn_fit.py).
3. Report the parameters and the log-likelihood (with the default parameters' for
   comparison) and, when the history goes on after the cutoff, the calibration vs holdout
   table (repeat purchase days in the holdout, expected vs actual, by the number before the
   cutoff) and the ROC AUC for "no purchase in the holdout" with the fitted and the default
   parameters.
4. With ``--output``: set the four fields in that rules file (YAML; created if missing, the
   other settings kept), check that the project's loader accepts it, and only then replace it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import yaml

from processors.churn import purchase_summary
from processors.churn_fit import PARAMS, Fit, FitError, Params, fit, holdout_report, log_likelihood
from processors.errors import RulesError
from processors.rules import ChurnModel, Rules
from processors.timeutil import DAY_MS
from schemas.codec import format_time
from streams.rules_file import load_rules
from streams.tools.evaluate import merged, read_histories, replay, score_replayed
from streams.tools.replay import ReplayError

EXIT_OK = 0


def _default_params() -> Params:
    m = ChurnModel()
    return Params(m.rate_shape, m.rate_scale_days, m.dropout_a, m.dropout_b)


def fitted_rules(rules: Rules, params: Params) -> Rules:
    m = rules.churn.model
    model = replace(m, rate_shape=params.r, rate_scale_days=params.alpha,
                    dropout_a=params.a, dropout_b=params.b)
    return replace(rules, churn=replace(rules.churn, model=model))


def write_rules(path: str, params: Params) -> None:
    """Set ``churn.model``'s four fitted fields in the YAML rules file ``path`` (created when
    missing; every other setting kept, comments are not), validated before it replaces the
    file. Raises ``ReplayError`` (a usage error) for a file that cannot take them."""
    p = Path(path)
    if p.suffix.lower() == ".toml":
        raise ReplayError(f"{path}: --output must be a YAML rules file (.yaml or .yml)")
    data: Any = {}
    if p.exists():
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ReplayError(f"cannot read the rules file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ReplayError(f"{path}: the top level must be a mapping of sections")
    churn = data.setdefault("churn", {})
    if not isinstance(churn, dict) or not isinstance(churn.setdefault("model", {}), dict):
        raise ReplayError(f"{path}: 'churn' and 'churn.model' must be mappings")
    churn["model"].update(params.as_rules())
    header = ("# churn.model rate_shape, rate_scale_days, dropout_a, dropout_b: fitted by "
              "`pulse fit churn`\n")
    text = header + yaml.safe_dump(data, sort_keys=False)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pulse-rules-", suffix=".yaml", dir=p.parent)
    except OSError as exc:
        raise ReplayError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            load_rules(tmp)  # the loader PULSE_RULES_FILE goes through
        except RulesError as exc:
            raise ReplayError(f"{path}: the rules would not load with the fit: {exc}") from None
        try:
            os.replace(tmp, p)
        except OSError as exc:
            raise ReplayError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def render(result: Fit, default_ll: float, cutoff: int, report: list[str]) -> str:
    p = result.params
    lines = [
        f"purchase model (MBG/NBD) fitted to {result.customers} customers who bought before "
        f"{format_time(cutoff)}",
        f"  rate_shape (r)          {p.r:.6g}",
        f"  rate_scale_days (alpha) {p.alpha:.6g}",
        f"  dropout_a (a)           {p.a:.6g}",
        f"  dropout_b (b)           {p.b:.6g}",
        f"  log-likelihood {result.log_likelihood:.2f} (default parameters: {default_ll:.2f}; "
        f"{result.log_likelihood - default_ll:+.2f})",
    ]
    if not result.converged:
        lines.append(f"  warning: the optimiser did not converge: {result.message}")
    if result.at_bound:
        lines.append("  warning: at the edge of the range the rules accept: "
                     + ", ".join(result.at_bound))
    return "\n".join(lines + report)


def _holdout_lines(params: Params, days: float, xs: list[int], txs: list[float],
                   ts: list[float], actual: list[int]) -> list[str]:
    rows = holdout_report(params, days, xs, txs, ts, actual)
    lines = [f"  calibration vs holdout ({days:.1f} days after the cutoff): repeat purchase "
             "days per customer",
             f"    {'before cutoff':>13s} {'customers':>10s} {'actual':>9s} {'expected':>9s}"]
    lines += [f"    {b.label:>13s} {b.customers:>10d} {b.actual:>9.3f} {b.expected:>9.3f}"
              for b in rows]
    return lines


def run(history: str, *, rules: Rules, cutoff: int | None = None, tickets: str | None = None,
        surveys: str | None = None, fmt: str | None = None, currency: str | None = None,
        output: str | None = None, stdout: IO[str] | None = None,
        stderr: IO[str] | None = None) -> int:
    """The whole command; returns the exit code. Raises ``ReplayError`` for usage errors."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parsed, _, _ = read_histories(history, tickets, surveys, rules, fmt=fmt,
                                  currency=currency, stderr=stderr)
    newest = max((p.events[-1].occurred_at for p in parsed if p.events), default=None)
    if newest is None:
        raise ReplayError(f"{history}: no events to fit to")
    at = newest + 1 if cutoff is None else cutoff
    rep = replay(merged(parsed), rules, at)
    xs: list[int] = []
    txs: list[float] = []
    ts: list[float] = []
    actual: list[int] = []
    for cid, state in rep.states.items():
        summary = purchase_summary(state, rules, at)
        if summary is None:
            continue
        x, tx, big_t = summary
        xs.append(x)
        txs.append(tx)
        ts.append(big_t)
        actual.append(len({t // DAY_MS for t in rep.after.get(cid, ())}))
    try:
        result = fit(xs, txs, ts)
    except FitError as exc:
        raise ReplayError(f"{history}: {exc}") from None
    default_ll = float(log_likelihood(_default_params(), xs, txs, ts).sum())
    report: list[str] = []
    if newest >= at:
        days = (newest + 1 - at) / DAY_MS
        report = _holdout_lines(result.params, days, xs, txs, ts, actual)
        fitted = fitted_rules(rules, result.params)
        default = fitted_rules(rules, _default_params())
        ev = score_replayed(rep, fitted, days, default_rules=default)
        a = ev.aucs()
        report.append(f"  ROC AUC for 'no purchase in the holdout' ({ev.churned} of "
                      f"{len(ev.samples)} customers), horizon_days "
                      f"{rules.churn.model.horizon_days:g}:")
        for key, label in (("churn_score", "fitted parameters"),
                           ("churn_score_default_model", "default parameters"),
                           ("recency", "recency baseline"),
                           ("purchase_count", "purchase-count baseline")):
            v = a.get(key)
            report.append(f"    {label:<24s} {'n/a' if v is None else f'{v:.4f}'}")
    stdout.write(render(result, default_ll, at, report) + "\n")
    if output:
        write_rules(output, result.params)
        stdout.write(f"wrote churn.model ({', '.join(PARAMS)}) to {output}\n")
    return EXIT_OK
