"""``python -m emulators``: serve the Azure OpenAI emulator on EMULATOR_HOST:EMULATOR_PORT.

Werkzeug's threaded WSGI server runs in this one process, a thread per connection: the limiter
and counters live in memory and must be shared by every request, which a multi-process server
(gunicorn workers) would split. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import logging
import signal
import sys

from werkzeug.serving import make_server

from emulators.app import create_app
from settings import configure_logging, settings_or_exit

log = logging.getLogger("conduit.emulators")


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main() -> None:
    settings = settings_or_exit("emulators")
    configure_logging(settings)
    # One line per request is noise at the rates benchmarks send; DEBUG brings it back.
    if settings.log_level != "DEBUG":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app(settings)
    server = make_server(settings.emulator_host, settings.emulator_port, app, threaded=True)
    signal.signal(signal.SIGTERM, _stop)
    log.info(
        "Azure OpenAI emulator serving %s on %s (window %ss)",
        ", ".join(sorted(app.extensions["emulator"].limiter.limits)),
        settings.emulator_url,
        settings.emulator_window_s,
    )
    log.info(
        "Azure AI Search emulator serving %s/search (indexes in %s)",
        settings.emulator_url,
        settings.search_emulator_data_dir,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
