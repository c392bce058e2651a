"""Protocol errors, named by whose fault they are (as h11 does).

ProtocolError
├── LocalProtocolError    this side tried to do something the protocol forbids
│                         (an event after the terminal one, an error after visible text)
└── RemoteProtocolError   the peer sent something malformed (bad SSE, bad JSON, bad message)
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every protocol error."""


class LocalProtocolError(ProtocolError):
    """Our own code broke a protocol rule: a bug on this side, never the peer's fault."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that does not follow the protocol."""
