"""The current request's id, for every log line written while serving it.

A context variable rather than a parameter: the id must reach log lines in the
provisioner and in worker threads (anyio copies the context into them) without
every function passing it along.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

current: ContextVar[str] = ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record, so formats can use ``%(request_id)s``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get()
        return True
