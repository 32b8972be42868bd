"""The ``pulse`` command line."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from streams.settings import Settings, SettingsError, from_env

log = logging.getLogger("pulse")


def _settings() -> Settings:
    try:
        return from_env()
    except SettingsError as exc:
        raise click.ClickException(f"bad setting: {exc}") from None


def _rules(settings: Settings) -> Any:
    from processors.errors import RulesError
    from streams.rules_file import load_rules

    try:
        return load_rules(settings.rules_file or None)
    except RulesError as exc:
        raise click.ClickException(f"bad rules file {settings.rules_file}: {exc}") from None


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


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
def worker() -> None:
    """Run one worker: the batch engine, /metrics and the customer API."""
    import faust

    from streams.admin import create_topics
    from streams.app import create_app

    settings = _settings()
    rules = _rules(settings)
    _logging(settings.log_level)
    asyncio.run(create_topics(settings))
    app = create_app(settings, rules)
    w = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True,
                     override_logging=False)
    w.execute_from_commandline()


@cli.group()
def topics() -> None:
    """Topic administration."""


@topics.command("create")
def topics_create() -> None:
    """Create every topic with PULSE_PARTITIONS partitions (inputs co-partitioned)."""
    from streams.admin import create_topics

    settings = _settings()
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
def simulate(customers: int, rate: float, history_days: int, duration: float,
             malformed_rate: float, seed: int) -> None:
    """Produce realistic purchases, tickets, surveys and redemptions."""
    from streams.simulate import SimulationRun

    settings = _settings()
    _logging(settings.log_level)
    run = SimulationRun(settings, customers=customers, rate=rate, history_days=history_days,
                        malformed_rate=malformed_rate, seed=seed)

    async def main() -> None:
        await run.run(duration or None)

    _run(main)
    click.echo(run.summary())


@cli.command()
@click.option("--duration", default=0.0, help="Stop everything after this many seconds.")
@click.option("--no-simulate", is_flag=True, help="Run the stack without traffic.")
@click.option("--customers", default=2000, show_default=True)
@click.option("--rate", default=1500.0, show_default=True, help="Simulated events per second.")
@click.option("--history-days", default=365, show_default=True)
@click.option("--malformed-rate", default=0.002, show_default=True)
@click.option("--interval", default=5.0, show_default=True, help="Seconds between summaries.")
def dev(duration: float, no_simulate: bool, customers: int, rate: float, history_days: int,
        malformed_rate: float, interval: float) -> None:
    """The embedded stack: Tansu + redis-server + a worker + the simulator, with a summary."""
    from streams.devrun import DevRun

    base = _settings()
    run = DevRun(base, simulate=not no_simulate, customers=customers, rate=rate,
                 history_days=history_days, malformed_rate=malformed_rate, interval=interval)
    code = run.main(duration or None)
    sys.exit(code)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli(prog_name="pulse")


if __name__ == "__main__":
    main()
