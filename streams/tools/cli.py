"""The ``pulse`` command line."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import click

from streams.errors import EXIT_HALTED, EXIT_USAGE, as_pulse_error, configure_logging
from streams.settings import Settings, SettingsError, from_env, validate

log = logging.getLogger("pulse")
_loaded: list[Settings] = []  # the settings of this run, for error messages


class _Fail(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _settings() -> Settings:
    try:
        settings = from_env()
    except SettingsError as exc:
        raise _Fail(f"bad setting: {exc}", EXIT_USAGE) from None
    _loaded.append(settings)
    return settings


def _rules(settings: Settings) -> Any:
    from processors.errors import RulesError
    from streams.rules_file import load_rules

    try:
        return load_rules(settings.rules_file or None)
    except RulesError as exc:
        raise click.ClickException(f"bad rules file {settings.rules_file}: {exc}") from None


def _check(settings: Settings, *, kafka: bool = False, redis: bool = False) -> None:
    """Connect once with the configured security before anything starts, retrying an
    unreachable Kafka or Redis for PULSE_CONNECT_TIMEOUT_S: a refused certificate,
    password or token, or a dependency still away, is one line naming the setting (exit 3;
    an unusable certificate or key file is a bad setting, exit 2), never a traceback."""
    from streams.kafka_client import KafkaSetupError
    from streams.kafka_client import check as check_kafka
    from streams.redis_client import RedisSetupError
    from streams.redis_client import check as check_redis

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # it logs each failed attempt; explain() says it better
    try:
        if redis:
            asyncio.run(check_redis(settings, settings.connect_timeout_s))
        if kafka:
            asyncio.run(check_kafka(settings, settings.connect_timeout_s))
    except (KafkaSetupError, RedisSetupError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    except SettingsError as exc:
        click.echo(f"error: bad setting: {exc}", err=True)
        sys.exit(2)
    finally:
        quiet.setLevel(level)


def _check_redis(settings: Settings) -> None:
    _check(settings, redis=True)


def _run(coro_factory: Callable[[], Any]) -> Any:
    try:
        return asyncio.run(coro_factory())
    except KeyboardInterrupt:
        return None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """customer-pulse: churn alerts, loyalty points and live KPIs from customer events.

    Settings come from PULSE_* environment variables (see the README).
    """


@cli.command()
@click.option("--processes", default=None, metavar="N|auto",
              help="Engine processes in the consumer group, under one supervisor that serves "
                   "their metrics, health and API on PULSE_WEB_PORT; auto: the CPUs "
                   "available, at most PULSE_PARTITIONS [default: PULSE_PROCESSES, 1: this "
                   "process runs the engine itself].")
@click.option("--process-index", type=click.IntRange(min=0), default=None, hidden=True)
def worker(processes: str | None, process_index: int | None) -> None:
    """Run a worker: the batch engine, /metrics and the customer API."""
    from streams.worker.api import exposure_error
    from streams.worker.preflight import check_web

    settings = _settings()
    if processes is not None and process_index is None:
        settings = settings.with_(processes=processes.strip().lower())
        try:
            validate(settings)
        except SettingsError as exc:
            raise _Fail(f"--processes {processes}: {str(exc).split(': ', 1)[-1]}",
                        EXIT_USAGE) from None
    rules = _rules(settings)
    exposed = exposure_error(settings)
    if exposed:
        click.echo(f"error: {exposed}", err=True)
        sys.exit(2)
    n, why = _processes(settings) if process_index is None else (1, "")
    tag = "supervisor" if n > 1 else "" if process_index is None else f"process {process_index}"
    configure_logging(settings.log_level, tag)
    check_web(settings)
    _check(settings, kafka=True, redis=True)  # retried for PULSE_CONNECT_TIMEOUT_S
    from streams.worker.admin import create_topics

    asyncio.run(create_topics(settings))
    if n > 1:
        _supervise(settings, n, why)
    _run_worker(settings, rules, process_index)


def _processes(settings: Settings) -> tuple[int, str]:
    from streams.worker.supervisor import resolve_processes

    n, why = resolve_processes(settings.processes, settings.partitions)
    if n > settings.partitions:
        click.echo(f"warning: {n} processes for PULSE_PARTITIONS={settings.partitions}: a "
                   "process owns whole partitions, so some will stand by idle", err=True)
    if settings.processes == "auto":
        log.info("PULSE_PROCESSES=%s", why)
    return n, why


def _supervise(settings: Settings, n: int, why: str) -> None:
    from streams.worker.supervisor import Supervisor

    sup = Supervisor(settings, n)
    log.info("starting %d engine processes (%s)", n, why)
    code = asyncio.run(sup.run())
    if code == EXIT_HALTED:
        click.echo(f"pulse worker halted: {sup.reason}", err=True)
    elif code:
        click.echo(f"error: {sup.reason}", err=True)
    sys.exit(code)


def _run_worker(settings: Settings, rules: Any, index: int | None) -> None:
    """One engine in this process, in a Faust worker (``index``: which process of a
    supervisor this is)."""
    import faust

    from streams.worker.app import create_app

    app = create_app(settings, rules)
    w = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True,
                     override_logging=False)
    try:
        w.execute_from_commandline()
    except SystemExit:
        halted = app.pulse_engine.health.halted  # type: ignore[attr-defined]
        if halted:
            who = "" if index is None else f" (process {index})"
            click.echo(f"pulse worker{who} halted: {halted}", err=True)
            sys.exit(EXIT_HALTED)
        raise


@cli.command()
@click.option("--partition", "partitions", type=int, multiple=True,
              help="A partition to rebuild (repeatable) [default: every partition].")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def rebuild(partitions: tuple[int, ...], yes: bool) -> None:
    """Reprocess partitions from the earliest offsets Kafka retains.

    Deletes the partitions' state in Redis (customers, KPI counters, ledgers, outbox, fence)
    and moves the consumer group's offsets to each partition's start; the next `pulse worker`
    rebuilds them. Stop every worker of the group first.
    """
    from streams.worker.recovery import rebuild_offline

    settings = _settings()
    parts = sorted(set(partitions)) or list(range(settings.partitions))
    bad = [p for p in parts if not 0 <= p < settings.partitions]
    if bad:
        raise _Fail(f"--partition {bad[0]}: PULSE_PARTITIONS={settings.partitions} "
                    f"(partitions 0-{settings.partitions - 1})", EXIT_USAGE)
    _check(settings, kafka=True, redis=True)
    if not yes:
        click.confirm(f"delete the Redis state of partitions {parts} (prefix "
                      f"{settings.redis_prefix}) and reprocess them from Kafka?", abort=True)
    for line in asyncio.run(rebuild_offline(settings, parts)):
        click.echo(line)
    click.echo("start the workers: they reprocess these partitions from the offsets above")


@cli.group()
def topics() -> None:
    """Topic administration."""


@topics.command("create")
def topics_create() -> None:
    """Create every topic with PULSE_PARTITIONS partitions (inputs co-partitioned)."""
    from streams.worker.admin import create_topics

    settings = _settings()
    _check(settings, kafka=True)
    result = asyncio.run(create_topics(settings))
    for topic, what in result.items():
        click.echo(f"{topic:30s} {what} ({settings.partitions} partitions)")


@cli.command()
@click.option("--customers", default=1000, show_default=True, help="Simulated customers.")
@click.option("--rate", default=500.0, show_default=True,
              help="Events per second (0: as fast as possible).")
@click.option("--history-days", default=365, show_default=True,
              help="Days of history to produce first (event times end at now).")
@click.option("--duration", default=0.0, help="Stop after this many seconds (0: no limit).")
@click.option("--malformed-rate", default=0.0, show_default=True,
              help="Share of deliberately malformed records (0-1).")
@click.option("--seed", default=1, show_default=True)
@click.option("--customer-events", is_flag=True,
              help="Also produce customer records (signups, consent, profile updates) on the "
                   "customers topic; the other records stay the same.")
def simulate(customers: int, rate: float, history_days: int, duration: float,
             malformed_rate: float, seed: int, customer_events: bool) -> None:
    """Produce realistic purchases, tickets, surveys and redemptions (and, with
    --customer-events, signups, consent and profile updates)."""
    from streams.tools.simulate import SimulationRun

    settings = _settings()
    configure_logging(settings.log_level)
    _check(settings, kafka=True)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the final message says it
    run = SimulationRun(settings, customers=customers, rate=rate, history_days=history_days,
                        malformed_rate=malformed_rate, seed=seed,
                        customer_events=customer_events)

    async def main() -> None:
        await run.run(duration or None)

    _run(main)
    click.echo(run.summary())


@cli.command()
@click.option("--duration", default=0.0, help="Stop everything after this many seconds.")
@click.option("--no-simulate", is_flag=True, help="Run the stack without traffic.")
@click.option("--customers", default=2000, show_default=True)
@click.option("--rate", default=600.0, show_default=True, help="Simulated events per second.")
@click.option("--history-days", default=365, show_default=True)
@click.option("--malformed-rate", default=0.002, show_default=True)
@click.option("--interval", default=5.0, show_default=True, help="Seconds between summaries.")
@click.option("--clock", type=click.Choice(["live", "event"]), default=None,
              help="The worker's clock (README \"Time\") [default: PULSE_CLOCK, live].")
@click.option("--customer-events/--no-customer-events", default=True, show_default=True,
              help="Simulate customer records (signups, consent, profile updates) too.")
def dev(duration: float, no_simulate: bool, customers: int, rate: float, history_days: int,
        malformed_rate: float, interval: float, clock: str | None,
        customer_events: bool) -> None:
    """The embedded stack: Tansu + redis-server + a worker + the simulator, with a summary."""
    from streams.tools.devrun import DevRun

    base = _settings()
    if clock is not None:
        base = base.with_(clock=clock)
    run = DevRun(base, simulate=not no_simulate, customers=customers, rate=rate,
                 history_days=history_days, malformed_rate=malformed_rate, interval=interval,
                 customer_events=customer_events)
    code = run.main(duration or None)
    sys.exit(code)


def _event_time(value: str | None, option: str) -> int | None:
    from schemas.codec import InvalidEvent, parse_when

    if value is None:
        return None
    try:
        return parse_when(value, option)
    except InvalidEvent as exc:
        raise click.BadParameter(f"{exc.message} (a date YYYY-MM-DD means midnight UTC)",
                                 param_hint=option) from None


@cli.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--kind", "kinds", multiple=True,
              type=click.Choice(["purchase", "ticket", "survey", "customer"]),
              help="What the files' rows are: once for all files, or once a file in order. "
                   "Default: each file's kind from its columns (amount: purchase, ticket_id: "
                   "ticket, score: survey; referred_by, birth_date, time_zone or consent_*: "
                   "customer).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
              help="Default: from the extension (.csv; .jsonl or .ndjson).")
@click.option("--currency", default=None,
              help="Currency of purchase rows without one [default: the reporting currency].")
@click.option("--source", default="replay", show_default=True, help="The events' source.")
@click.option("--emit", type=click.Choice(["jsonl"]), default=None,
              help="Write 'customer_id<TAB>json' lines to stdout instead of sending.")
@click.option("--rate", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Events per second (0: as fast as possible).")
@click.option("--wait", "wait", is_flag=True,
              help="After sending, wait until the workers have handled every record and "
                   "report applied / duplicate / dead-lettered by reason (reads PULSE_REDIS_URL).")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(min=1),
              help="With --wait: seconds to wait for the workers.")
def replay(files: tuple[str, ...], kinds: tuple[str, ...], fmt: str | None,
           currency: str | None, source: str, emit: str | None, rate: float, wait: bool,
           timeout: float) -> None:
    """Load history from CSV or JSONL FILES into a running system, merged in event time.

    Customers the system has not seen play their history out on the replay's own clock
    (points, expiries and alerts at their event times, marked backfill); see the README,
    "Time". Exit code 0: every row sent (and, with --wait, applied or a duplicate); 1: some
    rows rejected or dead-lettered (the rest were sent); 2: usage error (nothing sent);
    3: sending failed, or Redis unreachable for --wait; 5: --wait timed out.
    """
    from streams.tools.replay import ReplayError, run

    settings = _settings()
    rules = _rules(settings)
    configure_logging(settings.log_level)
    # aiokafka logs every reconnect attempt at ERROR; one final message says it better
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if emit is None:
        _check(settings, kafka=True)
    try:
        code = run(list(files), kind=list(kinds) or None, fmt=fmt, rules=rules,
                   settings=settings, currency=currency, source=source, emit=emit, rate=rate,
                   wait=timeout if wait else None)
    except ReplayError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(code)


@cli.group()
def customers() -> None:
    """Customer states in bulk."""


@customers.command("export")
@click.option("--as-of", "as_of", required=True,
              help="Event time to evaluate at: RFC 3339 with offset, or YYYY-MM-DD (UTC).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write here instead of stdout.")
def customers_export(as_of: str, fmt: str, output: str | None) -> None:
    """Every customer's row as of an event time, sorted by customer id."""
    from streams.worker.views import load_rows, write_csv, write_file, write_jsonl

    settings = _settings()
    rules = _rules(settings)
    at = _event_time(as_of, "--as-of")
    assert at is not None
    _check_redis(settings)
    loaded = asyncio.run(load_rows(settings, rules, at))
    write = write_csv if fmt == "csv" else write_jsonl
    if output:
        write_file(output, write, loaded.rows)
    else:
        write(loaded.rows, click.get_text_stream("stdout"))
    if output:
        click.echo(f"{len(loaded.rows)} customers written to {output}", err=True)
    if loaded.after_as_of:
        click.echo(f"note: {loaded.after_as_of} customers have events after --as-of; their "
                   "totals include those events (the windows do not)", err=True)
    for bad in loaded.undecodable:
        click.echo(f"error: state not exported: {bad}", err=True)
    sys.exit(1 if loaded.undecodable else 0)


@customers.command("erase")
@click.argument("customer_id")
@click.option("--idempotency-key", "key", default=None,
              help="Any unique string; re-running with the same key sends the same request "
                   "[default: a new UUID, printed].")
@click.option("--wait", is_flag=True,
              help="Wait until the worker has erased the customer.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="With --wait: seconds to wait.")
def customers_erase(customer_id: str, key: str | None, wait: bool, timeout: float) -> None:
    """Ask for a customer's erasure (GDPR Art. 17) through the customers topic: the worker
    removes everything it holds about them and writes a receipt to the audit topic.

    Exit 0 sent (with --wait: erased); 2 usage; 3 Kafka or Redis unreachable;
    5 --wait timed out."""
    _operation("erasure", customer_id, {}, key, wait, timeout,
               lambda op: f"erasure of {customer_id}")


@cli.command()
@click.argument("customer_id")
@click.option("--as-of", "as_of", default=None,
              help="Event time to evaluate at [default: the partition clock: now in live "
                   "mode, the newest event applied on the customer's partition in event mode].")
@click.option("--json", "as_json", is_flag=True,
              help="Print everything held about the customer as one JSON document (the "
                   "export row, latest ledger entries, churn reasons, the stored state): the "
                   "subject access of GET /customers/{id}/export.")
def customer(customer_id: str, as_of: str | None, as_json: bool) -> None:
    """One customer's state, readably (or everything held, as JSON); the same view, as-of and
    units as GET /customers/{id}. Exit 0; 1 unknown customer or unreadable state;
    2 usage; 3 Redis unreachable."""
    import time

    from processors.errors import WireError
    from streams.worker.access import load_subject_access
    from streams.worker.views import json_line, load_customer, render, render_ledger

    settings = _settings()
    rules = _rules(settings)
    at = _event_time(as_of, "--as-of")
    _check_redis(settings)
    now_ms = int(time.time() * 1000)
    try:
        got: Any = asyncio.run(load_subject_access(settings, rules, customer_id, now_ms, at)
                               if as_json else
                               load_customer(settings, rules, customer_id, at, now_ms))
    except WireError as exc:
        raise click.ClickException(f"customer {customer_id!r}: stored state unreadable: {exc}")\
            from None
    if got is None:
        raise click.ClickException(
            f"unknown customer {customer_id!r}: no state in Redis "
            f"(PULSE_REDIS_PREFIX={settings.redis_prefix}, PULSE_PARTITIONS={settings.partitions})"
        )
    if as_json:  # GET /customers/{id}/export
        click.echo(json_line(got))
    else:
        note = f"the partition clock, PULSE_CLOCK={settings.clock}; --as-of to change" \
            if got.as_of_is_default else ""
        click.echo(render(got.row, note))
        click.echo(render_ledger(got.ledger))


def _operation(kind: str, customer_id: str, body: dict[str, Any], key: str | None,
               wait: bool, timeout: float, describe: Callable[[Any], str]) -> None:
    """Send a member operation (streams/tools/members.py) and exit with its code."""
    from streams.tools.members import new_key, run

    settings = _settings()
    generated = key is None
    body["idempotency_key"] = new_key() if key is None else key
    _check(settings, kafka=True, redis=True)
    outcome = run(settings, kind, customer_id, body, timeout if wait else None, describe)
    for line in outcome.lines:
        click.echo(line, err=line.startswith("error:"))
    if generated and outcome.code != EXIT_USAGE:
        click.echo(f"idempotency key {body['idempotency_key']}: to retry safely, re-run with "
                   f"--idempotency-key {body['idempotency_key']}", err=True)
    sys.exit(outcome.code)


_KEY_HELP = ("Any unique string (e.g. a UUID); re-running with the same key never applies "
             "it twice [default: a new UUID, printed].")
_WAIT_HELP = "Wait for the worker's answer (the ledger entry) and print it."


@cli.group()
def points() -> None:
    """Points adjustments (README "Member operations")."""


@points.command("adjust")
@click.argument("customer_id")
@click.option("--points", "amount", required=True, type=int,
              help="Points to credit (positive) or debit (negative), not 0.")
@click.option("--operator", required=True, help="Who makes the adjustment (in the ledger).")
@click.option("--reason", required=True, help="Why, in words the customer may read.")
@click.option("--idempotency-key", "key", default=None, help=_KEY_HELP)
@click.option("--wait", is_flag=True, help=_WAIT_HELP)
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="With --wait: seconds to wait.")
def points_adjust(customer_id: str, amount: int, operator: str, reason: str, key: str | None,
                  wait: bool, timeout: float) -> None:
    """Credit or debit a member's points, through the adjustments topic.

    Exit 0 sent (with --wait: applied); 1 --wait: rejected (e.g. the balance cannot cover a
    debit); 2 usage or unknown customer (nothing sent); 3 Kafka or Redis unreachable;
    5 --wait timed out."""
    _operation("adjustment", customer_id,
               {"points": amount, "operator": operator, "reason": reason}, key, wait, timeout,
               lambda op: f"adjustment of {amount:+d} pts for {customer_id} by {operator}")


@cli.group()
def rewards() -> None:
    """Redemptions (README "Member operations")."""


@rewards.command("redeem")
@click.argument("customer_id")
@click.option("--reward", "reward_id", required=True, help="The reward's id.")
@click.option("--points", "amount", required=True, type=int, help="Points it costs (1 or more).")
@click.option("--idempotency-key", "key", default=None, help=_KEY_HELP)
@click.option("--wait", is_flag=True, help=_WAIT_HELP)
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="With --wait: seconds to wait.")
def rewards_redeem(customer_id: str, reward_id: str, amount: int, key: str | None, wait: bool,
                   timeout: float) -> None:
    """Redeem a reward with a member's points, through the redemptions topic.

    Exit 0 sent (with --wait: redeemed); 1 --wait: refused (e.g. the balance is too low);
    2 usage or unknown customer (nothing sent); 3 Kafka or Redis unreachable;
    5 --wait timed out."""
    _operation("redemption", customer_id, {"reward_id": reward_id, "points": amount}, key, wait,
               timeout, lambda op: f"redemption of {reward_id} ({amount} pts) for {customer_id}")


@cli.group()
def evaluate() -> None:
    """Measure models against history."""


@evaluate.command("churn")
@click.option("--history", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Purchases, CSV or JSONL in the 'pulse replay' format (customer_id, "
                   "occurred_at, amount, ...).")
@click.option("--cutoff", required=True,
              help="Score as of this event time: RFC 3339 with offset, or YYYY-MM-DD (UTC).")
@click.option("--horizon", required=True, type=click.FloatRange(min=0, min_open=True),
              help="Days after the cutoff in which a purchase means 'not churned'.")
@click.option("--tickets", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Support tickets in the replay format (optional).")
@click.option("--surveys", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Survey answers in the replay format (optional).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
              help="Default: from each file's extension.")
@click.option("--currency", default=None,
              help="Currency of purchase rows without one [default: the reporting currency].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Score with this rules file (e.g. written by 'pulse fit "
              "churn') instead of PULSE_RULES_FILE.")
def evaluate_churn(history: str, cutoff: str, horizon: float, tickets: str | None,
                   surveys: str | None, fmt: str | None, currency: str | None,
                   as_json: bool, rules_file: str | None) -> None:
    """ROC AUC of the churn score for 'no purchase within --horizon days after --cutoff',
    next to the recency and purchase-count baselines. Replays the history before the cutoff
    through the same processors as the engine (PULSE_RULES_FILE applies). When the rules'
    purchase-model parameters are not the defaults (fitted), the AUC with the default
    parameters is shown as well."""
    from streams.tools.evaluate import ReplayError, run

    settings = _settings()
    rules = _rules(replace(settings, rules_file=rules_file) if rules_file else settings)
    at = _event_time(cutoff, "--cutoff")
    assert at is not None
    try:
        code = run(history, cutoff=at, horizon_days=horizon, rules=rules, tickets=tickets,
                   surveys=surveys, fmt=fmt, currency=currency, as_json=as_json)
    except ReplayError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(code)



@cli.group()
def fit() -> None:
    """Fit models to history."""


@fit.command("churn")
@click.option("--history", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Purchases, CSV or JSONL in the 'pulse replay' format.")
@click.option("--cutoff", default=None,
              help="Fit to the history before this event time (RFC 3339 with offset, or "
                   "YYYY-MM-DD); the rest is the holdout [default: the whole history].")
@click.option("--tickets", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Support tickets in the replay format (optional; for the holdout AUC).")
@click.option("--surveys", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Survey answers in the replay format (optional; for the holdout AUC).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
              help="Default: from each file's extension.")
@click.option("--currency", default=None,
              help="Currency of purchase rows without one [default: the reporting currency].")
@click.option("--output", default=None, type=click.Path(dir_okay=False),
              help="YAML rules file to write the fitted churn fields into (created, "
                   "or updated keeping its other settings; when it exists, the fit starts "
                   "from its rules instead of PULSE_RULES_FILE's).")
@click.option("--model-only", is_flag=True,
              help="Fit only the purchase model (churn.model), not the score's weights.")
def fit_churn(history: str, cutoff: str | None, tickets: str | None, surveys: str | None,
              fmt: str | None, currency: str | None, output: str | None,
              model_only: bool) -> None:
    """Fit the churn score to a history: the purchase model (MBG/NBD r, alpha, a, b) by
    maximum likelihood on the history before the cutoff, and the score's weights
    (model_weight, bias, churn.weights) by logistic regression on its last horizon_days;
    print them and, when the history goes on after the cutoff, a holdout report."""
    from streams.tools.fit import ReplayError, run

    rules = _rules(_settings())
    at = _event_time(cutoff, "--cutoff")
    try:
        code = run(history, rules=rules, cutoff=at, tickets=tickets, surveys=surveys, fmt=fmt,
                   currency=currency, output=output, model_only=model_only)
    except ReplayError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(code)


def _dlq_filter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed([
        click.option("--topic", default=None, help="Only records from this source topic."),
        click.option("--since", default=None,
                     help="Only originals produced at or after this time (RFC 3339 or "
                          "YYYY-MM-DD)."),
        click.option("--until", default=None, help="Only originals produced before this time."),
    ]):
        f = opt(f)
    return f


def _dlq_letters(reason: str | None, topic: str | None, since: str | None,
                 until: str | None) -> tuple[Any, list[Any]]:
    from streams.tools.deadletters import Filter, KafkaUnavailable, read_all

    settings = _settings()
    keep = Filter(reason, topic, _event_time(since, "--since"), _event_time(until, "--until"))
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # one message below says it
    try:
        letters = asyncio.run(read_all(settings, keep))
    except KafkaUnavailable as exc:
        click.echo(f"error: cannot reach Kafka at {exc} (check PULSE_KAFKA_BOOTSTRAP)", err=True)
        sys.exit(3)
    return settings, letters


@cli.group(invoke_without_command=True)
@click.option("--reason", default=None, help="Only this reason (e.g. unknown_currency).")
@_dlq_filter_options
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="List at most this many (the summary counts all that match).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line; the summary goes to stderr.")
@click.pass_context
def deadletters(ctx: click.Context, reason: str | None, topic: str | None, since: str | None,
                until: str | None, limit: int | None, as_json: bool) -> None:
    """List the dead-letter topic: reason, source topic/partition/offset, Kafka timestamp,
    message and the first bytes of the original, oldest first, with a count by reason.

    Reads from the beginning to the current end without joining a consumer group.
    Exit 0; 2 usage error; 3 Kafka unreachable."""
    if ctx.invoked_subcommand is not None:
        return
    import orjson

    from streams.tools.deadletters import summary

    _, letters = _dlq_letters(reason, topic, since, until)
    shown = letters if limit is None else letters[:limit]
    for d in shown:
        click.echo(orjson.dumps(d.as_dict()).decode() if as_json else d.line())
    more = f" ({len(shown)} listed)" if len(shown) < len(letters) else ""
    click.echo(summary(letters) + more, err=as_json)


@deadletters.command("redrive")
@click.option("--reason", required=True, help="Re-send the dead letters of this reason.")
@_dlq_filter_options
@click.option("--dry-run", is_flag=True, help="Count what would be sent; send nothing.")
def deadletters_redrive(reason: str, topic: str | None, since: str | None, until: str | None,
                        dry_run: bool) -> None:
    """Re-send the originals of dead letters (value and key unchanged, so the event ids are
    too: the worker drops any it has applied already) to their source topic, after a fix.

    Exit 0 all sent; 1 some skipped (original truncated, or no input topic to send it to);
    2 usage error; 3 Kafka unreachable."""
    from streams.tools.deadletters import KafkaUnavailable, plan, resend
    from streams.worker.topics import Topics

    settings, letters = _dlq_letters(reason, topic, since, until)
    todo, result = plan(letters, Topics.from_settings(settings).inputs, settings.partitions)
    if todo and not dry_run:
        try:
            asyncio.run(resend(settings, todo))
        except KafkaUnavailable as exc:
            click.echo(f"error: cannot reach Kafka at {exc} (check PULSE_KAFKA_BOOTSTRAP)",
                       err=True)
            sys.exit(3)
    verb = "would send" if dry_run else "sent"
    for t, n in sorted(result.sent.items()):
        click.echo(f"{n} {verb} to {t}")
    skipped = result.truncated + result.unknown_source
    click.echo(f"redrive {reason}: {len(letters)} matched, {len(todo)} {verb}, {skipped} "
               f"skipped ({result.truncated} original truncated, {result.unknown_source} "
               "without a known source topic)")
    sys.exit(1 if skipped else 0)



def _add_commands() -> None:
    from streams.notifier.cli import notifier

    cli.add_command(notifier)


_add_commands()


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # a command that is not a worker has no log handler: Python's last resort would print
    # every reconnect attempt of the Kafka client; the command's own message says it once
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        cli(prog_name="pulse")
    except Exception as exc:  # a dependency down or refusing us: one message, no traceback
        from streams.tools.devstack import MissingBinary

        if isinstance(exc, MissingBinary):
            click.echo(f"error: {exc}", err=True)
            sys.exit(3)
        err = as_pulse_error(_loaded[-1] if _loaded else None, exc)
        if err is None:
            raise
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # "Unclosed client" at exit
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
