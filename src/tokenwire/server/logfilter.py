"""No client input may put a traceback in the server log.

uvicorn's WebSocket implementation (``websockets-sansio``, the one ``ws="auto"`` picks) logs a
text frame that is not valid UTF-8 with ``logger.exception``: one traceback per frame, so any
client can flood the log. The socket is closed with 1007 all the same, which is the right
answer; only the log line is wrong. :class:`ClientInputFilter` turns that record into one
line at INFO, without the traceback. It matches only that record (its logger, message and
exception type), so a real failure still logs its traceback.
"""

from __future__ import annotations

import logging

UVICORN_LOGGER = "uvicorn.error"
_INVALID_UTF8 = "Invalid UTF-8 sequence received from client."


class ClientInputFilter(logging.Filter):
    """Rewrites uvicorn's invalid-UTF-8 traceback as a one-line INFO record."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.msg == _INVALID_UTF8 and isinstance(exc, UnicodeDecodeError):
            record.msg = "WebSocket client sent a text frame that is not UTF-8; closed (1007)"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.INFO
            record.levelname = logging.getLevelName(logging.INFO)
        return True


def quiet_client_input() -> None:
    """Install :class:`ClientInputFilter` on uvicorn's logger (once; call it after
    ``uvicorn.Config`` has configured logging)."""
    logger = logging.getLogger(UVICORN_LOGGER)
    if not any(isinstance(f, ClientInputFilter) for f in logger.filters):
        logger.addFilter(ClientInputFilter())
