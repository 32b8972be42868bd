"""``pulse notifier`` and ``pulse notifier redrive`` (added to the ``pulse`` group in
``streams/tools/cli.py``).

Exit codes: 0 ok; 1 (redrive) some dead letters failed again; 2 a bad setting or webhooks
file, an unknown ``--endpoint``; 3 Kafka unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import NoReturn

import click

from streams.notifier.config import WebhooksConfig, WebhooksConfigError, load_webhooks
from streams.settings import Settings, SettingsError, from_env


def _fail(code: int, message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _load() -> tuple[Settings, WebhooksConfig]:
    try:
        settings = from_env()
    except SettingsError as exc:
        _fail(2, f"bad setting: {exc}")
    if not settings.webhooks_file:
        _fail(2, "PULSE_WEBHOOKS_FILE is not set: name the YAML file with the 'endpoints:' "
                 "list (README, Notifications)")
    try:
        return settings, load_webhooks(settings.webhooks_file)
    except WebhooksConfigError as exc:
        _fail(2, f"bad webhooks file {exc}")


def _unreachable(settings: Settings, exc: Exception) -> NoReturn:
    _fail(3, f"Kafka unreachable at PULSE_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} "
             f"({type(exc).__name__})")


@click.group(invoke_without_command=True)
@click.pass_context
def notifier(ctx: click.Context) -> None:
    """Deliver churn alerts, ledger entries and engagement messages to webhooks.

    Endpoints come from the YAML file named by PULSE_WEBHOOKS_FILE. Runs until SIGTERM,
    then commits what was delivered or dead-lettered. Exit code 2: bad setting or webhooks
    file; 3: Kafka unreachable.
    """
    if ctx.invoked_subcommand is not None:
        return
    from aiokafka.errors import KafkaConnectionError

    from streams.errors import configure_logging
    from streams.notifier.service import Notifier

    settings, config = _load()
    configure_logging(settings.log_level)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # one line of ours says it

    async def main() -> None:
        n = Notifier(settings, config)
        await n.start()
        logging.getLogger("pulse").info(
            "notifier: %d endpoints (%s), group %s, /metrics on %s:%d",
            len(config.endpoints), ", ".join(e.name for e in config.endpoints),
            settings.notifier_group_id, settings.web_host, settings.notifier_web_port)
        await n.run()

    try:
        asyncio.run(main())
    except KafkaConnectionError as exc:
        _unreachable(settings, exc)
    except OSError as exc:
        _fail(2, f"cannot serve /metrics on {settings.web_host}:{settings.notifier_web_port} "
                 f"(PULSE_NOTIFIER_WEB_PORT): {exc.strerror}")
    except KeyboardInterrupt:
        pass


@notifier.command("redrive")
@click.option("--endpoint", "names", multiple=True,
              help="Only this endpoint's dead letters (repeatable) [default: every endpoint].")
def notifier_redrive(names: tuple[str, ...]) -> None:
    """Send the notifications dead letters again, with their original webhook-id.

    Exit code 0: every dead letter delivered (or none to send); 1: some failed again and are
    back in the dead-letter topic; 2: bad setting, webhooks file or --endpoint; 3: Kafka
    unreachable.
    """
    from aiokafka.errors import KafkaConnectionError

    from streams.errors import configure_logging
    from streams.notifier.service import redrive

    settings, config = _load()
    configure_logging(settings.log_level)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    known = [e.name for e in config.endpoints]
    for n in names:
        if n not in known:
            _fail(2, f"--endpoint {n}: not in {settings.webhooks_file} "
                     f"(endpoints: {', '.join(known)})")
    try:
        results = asyncio.run(redrive(settings, config, names or known))
    except KafkaConnectionError as exc:
        _unreachable(settings, exc)
    for r in results:
        click.echo(f"{r.endpoint}: {r.read} dead letters read, {r.delivered} delivered, "
                   f"{r.deadlettered} dead-lettered again")
    sys.exit(1 if any(r.deadlettered for r in results) else 0)
