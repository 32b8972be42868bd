"""``pulse fit churn``: the churn score fitted to the retailer's own history.

Theory of operation
-------------------
1. Read the history files and replay them up to the cutoff exactly as ``pulse evaluate
   churn`` does (streams/tools/evaluate.py: ``read_histories``, ``replay``), keeping the
   states as of an earlier cutoff too, ``horizon_days`` before it (``replay``'s snapshot);
   the cutoff defaults to just after the newest event.
2. **The purchase model.** Summarise each customer who bought before the cutoff as the churn
   score does (``processors.churn.model.purchase_summary``: repeat purchase days, t_x, T in days)
   and fit ``churn.model``'s ``r, alpha, a, b`` by maximum likelihood
   (processors/churn_fit.py ``fit``).
3. **The rest of the score** (``model_weight``, ``bias``, every ``churn.weights`` field,
   ``value_reference_minor``) on a time split of the same period, never on what comes after
   the cutoff: the purchase model is fitted again to the history before the earlier cutoff
   ``c0 = cutoff - horizon_days``; each customer who bought before ``c0`` gives the score's
   unweighted parts as of ``c0`` with that model (``processors.churn.model.signal_strengths``) and
   whether they then bought nothing until the cutoff (the question the score answers:
   no purchase in the next ``horizon_days``); ``fit_weights`` fits the weights to those
   outcomes by maximum likelihood (logistic regression). ``value_reference_minor`` is the
   median spend per purchase day of those customers. The weights are fitted twice: with the
   purchase model fitted before ``c0`` and with the rules' own parameters; the score keeps
   the one whose fit predicts the split's outcomes better (the lower log loss): maximum
   likelihood describes the purchases, which is not always what ranks "no purchase"
   best (the simulator's history: the fitted dropout is all-or-nothing). The rules
   written carry that purchase model (step 2's fit, or the rules' parameters) with its
   weights. It needs ``horizon_days`` of history before ``c0`` (otherwise only the
   purchase model is fitted, and the report says why); ``--model-only`` skips it.
4. Report the fit and, when the history goes on after the cutoff, the calibration vs holdout
   table (repeat purchase days in the holdout, expected vs actual, by the number before the
   cutoff) and the ROC AUC for "no purchase in the holdout" of the fitted score, of the
   fitted purchase model with the rules' weights, of the default parameters and of the
   baselines.
5. With ``--output``: set the fitted fields in that rules file (YAML; created if missing, the
   other settings kept), check that the project's loader accepts it, and only then replace it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from statistics import median
from typing import IO, Any

import yaml

from processors.churn.model import purchase_summary, signal_strengths
from processors.churn_fit import (
    Fit,
    FitError,
    Params,
    WeightFit,
    fit,
    fit_weights,
    holdout_report,
    log_likelihood,
)
from processors.errors import RulesError
from processors.rules import ChurnModel, Rules
from processors.state import CustomerState
from processors.timeutil import DAY_MS
from schemas.codec import format_time
from streams.rules_file import load_rules
from streams.tools.evaluate import (
    Replayed,
    merged,
    read_histories,
    replay,
    score_replayed,
    with_default_parameters,
)
from streams.tools.replay import ReplayError

EXIT_OK = 0
SCORE_FIELDS = ("model_weight", "bias")  # churn.* fields fitted with the weights


def _default_params() -> Params:
    m = ChurnModel()
    return Params(m.rate_shape, m.rate_scale_days, m.dropout_a, m.dropout_b)


def _sig6(v: float) -> float:
    return float(f"{v:.6g}")


def fitted_rules(rules: Rules, params: Params, weights: Mapping[str, float] | None = None,
                 value_reference: int | None = None) -> Rules:
    """``rules`` with the purchase model's ``params`` and, when given, ``weights``
    (``model_weight``, ``bias`` and ``churn.weights`` fields) and ``value_reference_minor``."""
    cr = rules.churn
    model = replace(cr.model, rate_shape=params.r, rate_scale_days=params.alpha,
                    dropout_a=params.a, dropout_b=params.b)
    cr = replace(cr, model=model)
    if weights:
        names = {f.name for f in fields(cr.weights)}
        cr = replace(cr, weights=replace(cr.weights, **{k: v for k, v in weights.items()
                                                         if k in names}),
                     model_weight=weights.get("model_weight", cr.model_weight),
                     bias=weights.get("bias", cr.bias))
    if value_reference is not None:
        cr = replace(cr, value_reference_minor=value_reference)
    return replace(rules, churn=cr)


@dataclass(frozen=True)
class ChurnFit:
    """What ``fit_replayed`` found; ``rules`` is what ``--output`` writes (6 significant
    digits, as written)."""

    model: Fit  # the purchase model, on the whole history before the cutoff
    rules: Rules
    weights: WeightFit | None = None  # None: not fitted, see ``skipped``
    skipped: str | None = None
    split_at: int | None = None  # the earlier cutoff of step 3
    early_model: Params | None = None  # the purchase model fitted to the history before it
    value_reference: int | None = None
    # the purchase model in ``rules``: "fitted" (``model``) or "rules" (the rules' own
    # parameters predicted the split's outcomes better), and the weights fitted with the other
    model_in_score: str = "fitted"
    other: WeightFit | None = None


def _summaries(states: Mapping[str, CustomerState], rules: Rules, at: int,
               customers: set[str] | None) -> tuple[list[str], list[int], list[float],
                                                     list[float]]:
    ids: list[str] = []
    xs: list[int] = []
    txs: list[float] = []
    ts: list[float] = []
    for cid in sorted(states):
        if customers is not None and cid not in customers:
            continue
        summary = purchase_summary(states[cid], rules, at)
        if summary is not None:
            ids.append(cid)
            xs.append(summary[0])
            txs.append(summary[1])
            ts.append(summary[2])
    return ids, xs, txs, ts


def split_time(rules: Rules, cutoff: int) -> int:
    """The earlier cutoff of the weights' time split: ``horizon_days`` before ``cutoff``."""
    return cutoff - int(rules.churn.model.horizon_days * DAY_MS)


def fit_replayed(rep: Replayed, rules: Rules, *, weights: bool = True,
                 customers: set[str] | None = None) -> ChurnFit:
    """Steps 2 and 3 of the module doc on a replay made with ``snapshot_at=split_time(rules,
    rep.cutoff)`` (only step 2 without ``weights``), on all customers or on ``customers``.
    Raises ``FitError`` when the purchase model cannot be fitted."""
    at = rep.cutoff
    _, xs, txs, ts = _summaries(rep.states, rules, at, customers)
    model = fit(xs, txs, ts)
    params = Params(*(_sig6(v) for v in model.params.as_tuple()))
    if not weights:
        return ChurnFit(model, fitted_rules(rules, params), skipped="--model-only")
    c0 = split_time(rules, at)
    horizon = rules.churn.model.horizon_days
    firsts = [s.first_purchase_at for cid, s in rep.states.items()
              if s.first_purchase_at is not None and (customers is None or cid in customers)]
    if rep.snapshot is None or not firsts or min(firsts) > c0 - horizon * DAY_MS:
        why = (f"the weights need {2 * horizon:g} days of history before the cutoff "
               f"(horizon_days {horizon:g} to fit to, and as many before them)")
        return ChurnFit(model, fitted_rules(rules, params), skipped=why, split_at=c0)
    ids, xs0, txs0, ts0 = _summaries(rep.snapshot, rules, c0, customers)
    try:
        early = fit(xs0, txs0, ts0).params
    except FitError as exc:
        return ChurnFit(model, fitted_rules(rules, params), split_at=c0,
                        skipped=f"the history before {format_time(c0)}: {exc}")
    spend = [s.total_spend_minor / s.purchase_days for s in (rep.snapshot[c] for c in ids)
             if s.purchase_days]
    reference = max(1, round(median(spend))) if spend else rules.churn.value_reference_minor
    names = [f.name for f in fields(rules.churn.weights)]
    cr = rules.churn
    start = {"model_weight": cr.model_weight, "bias": cr.bias,
             **{k: getattr(cr.weights, k) for k in names}}
    # no purchase in [c0, cutoff): the state at the cutoff has its latest purchase before c0
    churned = [(rep.states[cid].last_purchase_at or 0) < c0 for cid in ids]
    m = cr.model
    current = Params(m.rate_shape, m.rate_scale_days, m.dropout_a, m.dropout_b)
    # the purchase model inside the score: the fitted one or the rules' (see _pick)
    tried: dict[str, WeightFit] = {}
    for name, at_c0 in (("fitted", early), ("rules", current)):
        probe = fitted_rules(rules, at_c0, value_reference=reference)
        parts: list[dict[str, float]] = []
        for cid in ids:
            got = signal_strengths(rep.snapshot[cid], probe, c0)
            assert got is not None  # (ids bought before c0)
            parts.append(got)
        try:
            tried[name] = fit_weights([p["purchase_model"] for p in parts],
                                      {k: [p[k] for p in parts] for k in names}, churned, start)
        except FitError as exc:
            return ChurnFit(model, fitted_rules(rules, params), split_at=c0, early_model=early,
                            skipped=str(exc))
    pick = "fitted" if tried["fitted"].log_loss <= tried["rules"].log_loss else "rules"
    wf = tried[pick]
    values = {k: _sig6(v) for k, v in wf.values.items()}
    chosen = params if pick == "fitted" else current
    return ChurnFit(model, fitted_rules(rules, chosen, values, reference), wf, None, c0,
                    early, reference, pick, tried["rules" if pick == "fitted" else "fitted"])


def base_rules(output: str, rules: Rules) -> Rules:
    """The rules the fit starts from: the ``--output`` file when it exists (the weights are
    fitted for its settings, e.g. its ``horizon_days``, and written back into it), else
    ``rules`` (PULSE_RULES_FILE)."""
    if Path(output).suffix.lower() == ".toml":
        raise ReplayError(f"{output}: --output must be a YAML rules file (.yaml or .yml)")
    if not Path(output).exists():
        return rules
    try:
        return load_rules(output)
    except RulesError as exc:
        raise ReplayError(f"{output}: the rules would not load: {exc}") from None


def write_rules(path: str, result: ChurnFit) -> None:
    """Set the fitted fields (``churn.model``'s four; with fitted weights also
    ``model_weight``, ``bias``, ``value_reference_minor`` and every ``churn.weights`` field)
    in the YAML rules file ``path`` (created when missing; every other setting kept, comments
    are not), validated before it replaces the file. Raises ``ReplayError`` (a usage error)
    for a file that cannot take them."""
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
    if not isinstance(churn, dict) or not isinstance(churn.setdefault("model", {}), dict) \
            or not isinstance(churn.get("weights") or {}, dict):
        raise ReplayError(f"{path}: 'churn', 'churn.model' and 'churn.weights' must be "
                          "mappings")
    cr = result.rules.churn
    m = cr.model
    churn["model"].update(Params(m.rate_shape, m.rate_scale_days, m.dropout_a,
                                 m.dropout_b).as_rules())
    what = "churn.model rate_shape, rate_scale_days, dropout_a, dropout_b"
    if result.model_in_score == "rules":
        what = "churn.model as the rules had it (it predicted better than the fitted one)"
    if result.weights is not None:
        churn["weights"] = {f.name: getattr(cr.weights, f.name) for f in fields(cr.weights)}
        churn.update(model_weight=cr.model_weight, bias=cr.bias,
                     value_reference_minor=cr.value_reference_minor)
        what += "; churn.weights, model_weight, bias, value_reference_minor"
    text = f"# {what}: fitted by `pulse fit churn`\n" + yaml.safe_dump(data, sort_keys=False)
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


def _model_lines(result: Fit, default_ll: float, cutoff: int) -> list[str]:
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
    return lines + _warnings(result.converged, result.message, result.at_bound)


def _which(result: ChurnFit) -> str:
    assert result.weights is not None and result.other is not None
    mine, other = result.weights.log_loss, result.other.log_loss
    if result.model_in_score == "fitted":
        return (f"the fitted parameters (log loss {mine:.5f}; with the rules' parameters "
                f"{other:.5f})")
    return (f"the rules' parameters, which predict the outcome better (log loss {mine:.5f}; "
            f"with the fitted parameters {other:.5f}); the fitted ones are not written")


def _warnings(converged: bool, message: str, at_bound: tuple[str, ...]) -> list[str]:
    out = [] if converged else [f"  warning: the optimiser did not converge: {message}"]
    if at_bound:
        out.append("  warning: at the edge of the range the rules accept: " + ", ".join(at_bound))
    return out


def _weight_lines(result: ChurnFit, rules: Rules) -> list[str]:
    horizon = rules.churn.model.horizon_days
    if result.weights is None:
        return [f"score weights not fitted: {result.skipped}"]
    wf, cr = result.weights, result.rules.churn
    assert result.split_at is not None
    cur = rules.reporting_currency
    scale = 10 ** rules.minor_units[cur]
    lines = [
        f"score weights fitted to the {horizon:g} days before the cutoff (from "
        f"{format_time(result.split_at)}; purchase model fitted to the history before it): "
        f"{wf.customers} customers, {wf.churned} ({wf.churned / wf.customers:.1%}) bought "
        "nothing",
        f"  purchase model in the score: {_which(result)}",
        f"    {'':<20s} {'rules':>8s} {'fitted':>8s}  customers with the signal",
    ]
    start = {"model_weight": rules.churn.model_weight, "bias": rules.churn.bias}
    for k in SCORE_FIELDS:
        lines.append(f"    {k:<20s} {start[k]:>8.4g} {getattr(cr, k):>8.4g}")
    for f in fields(cr.weights):
        k = f.name
        note = (f"{wf.on[k]}" if k in wf.fitted
                else f"{wf.on[k]} (too few: kept)")
        lines.append(f"    {k:<20s} {getattr(rules.churn.weights, k):>8.4g} "
                     f"{getattr(cr.weights, k):>8.4g}  {note}")
    lines.append(f"  value_reference_minor {cr.value_reference_minor} (median spend per "
                 f"purchase day: {cr.value_reference_minor / scale:.2f} {cur})")
    lines.append(f"  log loss per customer {wf.log_loss:.4f} (the rules' weights: "
                 f"{wf.start_log_loss:.4f})")
    return lines + _warnings(wf.converged, wf.message, wf.at_bound)


def _holdout_lines(params: Params, days: float, xs: list[int], txs: list[float],
                   ts: list[float], actual: list[int]) -> list[str]:
    rows = holdout_report(params, days, xs, txs, ts, actual)
    lines = [f"calibration vs holdout ({days:.1f} days after the cutoff): repeat purchase "
             "days per customer",
             f"    {'before cutoff':>13s} {'customers':>10s} {'actual':>9s} {'expected':>9s}"]
    lines += [f"    {b.label:>13s} {b.customers:>10d} {b.actual:>9.3f} {b.expected:>9.3f}"
              for b in rows]
    return lines


def holdout_aucs(rep: Replayed, result: ChurnFit, rules: Rules, days: float
                 ) -> dict[str, float | None]:
    """ROC AUCs for "no purchase in the ``days`` after the cutoff": ``fitted`` (the fitted
    rules), ``fitted_model`` (the fitted purchase model with ``rules``' weights),
    ``default`` (the default parameters), ``recency`` and ``purchase_count``."""
    fitted = score_replayed(rep, result.rules, days,
                            default_rules=with_default_parameters(rules) or rules)
    a = fitted.aucs()
    model_only = fitted_rules(rules, Params(*(_sig6(v) for v in
                                             result.model.params.as_tuple())))
    b = score_replayed(rep, model_only, days).aucs()
    return {"fitted": a["churn_score"], "fitted_model": b["churn_score"],
            "default": a["churn_score_default_model"], "recency": a["recency"],
            "purchase_count": a["purchase_count"]}


def run(history: str, *, rules: Rules, cutoff: int | None = None, tickets: str | None = None,
        surveys: str | None = None, fmt: str | None = None, currency: str | None = None,
        output: str | None = None, model_only: bool = False, stdout: IO[str] | None = None,
        stderr: IO[str] | None = None) -> int:
    """The whole command; returns the exit code. Raises ``ReplayError`` for usage errors."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if output:
        rules = base_rules(output, rules)
    parsed, _, _ = read_histories(history, tickets, surveys, rules, fmt=fmt,
                                  currency=currency, stderr=stderr)
    newest = max((p.events[-1].occurred_at for p in parsed if p.events), default=None)
    if newest is None:
        raise ReplayError(f"{history}: no events to fit to")
    at = newest + 1 if cutoff is None else cutoff
    rep = replay(merged(parsed), rules, at, snapshot_at=split_time(rules, at))
    try:
        result = fit_replayed(rep, rules, weights=not model_only)
    except FitError as exc:
        raise ReplayError(f"{history}: {exc}") from None
    ids, xs, txs, ts = _summaries(rep.states, rules, at, None)
    default_ll = float(log_likelihood(_default_params(), xs, txs, ts).sum())
    lines = _model_lines(result.model, default_ll, at) + _weight_lines(result, rules)
    if newest >= at:
        days = (newest + 1 - at) / DAY_MS
        actual = [len({t // DAY_MS for t in rep.after.get(cid, ())}) for cid in ids]
        lines += _holdout_lines(result.model.params, days, xs, txs, ts, actual)
        a = holdout_aucs(rep, result, rules, days)
        churned = sum(1 for cid in ids if not rep.after.get(cid))
        lines.append(f"ROC AUC for 'no purchase in the holdout' ({churned} of {len(ids)} "
                     f"customers), horizon_days {rules.churn.model.horizon_days:g}:")
        for key, label in (("fitted", "fitted score" if result.weights is not None
                            else "fitted parameters"),
                           ("fitted_model", "fitted purchase model, the rules' weights"),
                           ("default", "default parameters"),
                           ("recency", "recency baseline"),
                           ("purchase_count", "purchase-count baseline")):
            if key == "fitted_model" and result.weights is None:
                continue
            v = a.get(key)
            lines.append(f"    {label:<42s} {'n/a' if v is None else f'{v:.4f}'}")
    stdout.write("\n".join(lines) + "\n")
    if output:
        write_rules(output, result)
        stdout.write(f"wrote the fit to {output}\n")
    return EXIT_OK
