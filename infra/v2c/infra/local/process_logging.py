"""One log format for every long-running process of the stack: a JSON object per line.

The handlers log through Powertools' `Logger`, which writes JSON in Lambda;
the local processes that host them (the API, the gateway, the moto server,
the simulator) used to write `%(asctime)s name LEVEL message` lines beside
those, so one stack's logs needed two parsers and tracebacks spanned lines.
Here the root logger gets Powertools' own formatter, so a line from
`logging.getLogger(__name__)` in a handler, from uvicorn, or from a
Powertools `Logger` has the same keys (`level`, `location`, `message`,
`timestamp`, `service`, plus `logger`, the stdlib logger's name, and any
`extra`), and an exception is one line with its stack trace as data.

botocore, boto3, s3transfer and urllib3 log every credential lookup and
connection at INFO; that chatter drowned the API's log (455 lines for one
demo) and says nothing an operator acts on, so they are held at WARNING.
"""

from __future__ import annotations

import logging
import sys
from typing import Final, TextIO

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

QUIET_LIBRARIES: Final = ("botocore", "boto3", "s3transfer", "urllib3", "werkzeug")
"""Loggers held at WARNING: per-request chatter of the AWS SDK and the moto server."""


class _LoggerName(logging.Filter):
    """Adds the stdlib logger's name as `logger`: Powertools' format has no field for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.logger = record.name
        return True


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stderr` as it is when a record comes, not as it was when
    the handler was made (as `logging.lastResort` does): a command run in-process
    (a test's `CliRunner`) swaps stderr and closes its stand-in afterwards, and a
    handler holding that stand-in would fail on every later record."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # `StreamHandler.__init__` sets it; the property always reads stderr


def json_handler(service: str, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing one Powertools JSON object per record, tagged with `service`."""
    handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderr()
    handler.setFormatter(LambdaPowertoolsFormatter(service=service, utc=True))
    handler.addFilter(_LoggerName())
    return handler


def configure_process_logging(
    service: str, *, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Make the root logger of this process write JSON lines (replacing its handlers)."""
    logging.basicConfig(handlers=[json_handler(service, stream)], level=level, force=True)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
