"""Run a real uvicorn server on a free loopback port inside the test's event loop: the testing
kit's own helpers, under the names the suite uses."""

from __future__ import annotations

from tokenwire.testing.server import free_port
from tokenwire.testing.server import serve_app as serve

__all__ = ["free_port", "serve"]
