"""Before ``pulse worker`` starts for real: can its web server listen where the settings say?

(Kafka and Redis are checked by ``streams.kafka_client.check`` and
``streams.redis_client.check`` with the configured TLS and SASL, retried for
``PULSE_CONNECT_TIMEOUT_S``: a worker started with its dependencies, e.g. by an
orchestrator, should not die because Redis came up a few seconds later. Wrong credentials
are not retried: waiting does not fix them.)
"""

from __future__ import annotations

import logging
import socket

from streams.errors import PulseError
from streams.settings import Settings

log = logging.getLogger(__name__)


class BadSetting(PulseError):
    exit_code = 2


def check_web(settings: Settings) -> None:
    """The worker's HTTP server can listen where the settings say."""
    try:
        infos = socket.getaddrinfo(settings.web_host, settings.web_port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BadSetting(f"PULSE_WEB_HOST={settings.web_host!r}: not a host name or address of "
                         f"this machine ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise BadSetting(f"PULSE_WEB_PORT={settings.web_port}: cannot listen on "
                             f"{settings.web_host}:{settings.web_port} ({exc.strerror}); "
                             "choose a free port (or PULSE_WEB_HOST)") from None
