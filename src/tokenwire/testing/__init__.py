"""A testing kit for applications built on tokenwire.

- :func:`assert_turn_invariants`: the promises every stream keeps (one terminal event, seq
  without gaps, deltas equal ``text.done``, structured data valid, inline data never before
  text), checked on the events a test received;
- :class:`ChannelRecorder`: both channels of an engine (every turn's events, every record the
  system channel delivered) for assertions;
- :func:`serve_app`: an ASGI app on a real server on a free loopback port;
- ``tokenwire.testing.fixtures``: pytest fixtures (``pytest_plugins = [...]``) that run an
  engine, an app and a server on the scripted provider.

See docs/testing.md for an example test of a small app.
"""

from .invariants import TurnInvariantError, assert_turn_invariants
from .recorder import RECORDER_ROUTE, ChannelRecorder, RecordedTurn
from .server import free_port, serve_app

__all__ = [
    "RECORDER_ROUTE",
    "ChannelRecorder",
    "RecordedTurn",
    "TurnInvariantError",
    "assert_turn_invariants",
    "free_port",
    "serve_app",
]
