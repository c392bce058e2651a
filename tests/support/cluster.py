"""A scale-out deployment for tests: gateways and workers as real subprocesses on loopback,
meeting in a throwaway redis-server (``tests/support/redis.py``).

Every process logs to a file of its own under the test's directory (shown when a test fails);
readiness is the line each prints once it serves, never a sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .redis import RedisServer

READY_TIMEOUT_S = 90.0

BASE_CONFIG = """
scripted = true
default_route = "scripted"

[providers.local]
kind = "local"
preload = false          # these tests run the scripted provider only

[store]
url = ""

[redis]
worker_heartbeat_s = 0.2
worker_lease_s = 1.5
log_unavailable_s = 2.0
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    name: str
    process: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no goodbye, no cleanup, as a crashed machine."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def terminate(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@dataclass
class Cluster:
    redis: RedisServer
    directory: Path
    config: str = BASE_CONFIG
    store_url: str = ""
    """The store every process shares ("" = none)."""
    processes: list[Process] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        path = self.directory / "tokenwire.toml"
        if not path.exists():
            path.write_text(self.config)
        return path

    async def _start(self, name: str, args: list[str], ready: str) -> Process:
        port = free_port()
        log = self.directory / f"{name}.log"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "TOKENWIRE_STORE__URL": self.store_url,
            "TOKENWIRE_REDIS__URL": self.redis.url,
        }
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tokenwire.cli",
                *args,
                "--config",
                str(self.config_path),
                "--port",
                str(port),
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        started = Process(name, process, port, log)
        self.processes.append(started)
        assert process.stdout is not None
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                while True:
                    line = (await process.stdout.readline()).decode()
                    if not line:
                        raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
                    if line.startswith(ready):
                        break
        except TimeoutError:
            raise RuntimeError(f"{name} did not start: {log.read_text()[-2000:]}") from None
        return started

    async def gateway(self, name: str = "gateway") -> Process:
        return await self._start(name, ["serve"], "tokenwire serving on")

    async def worker(self, name: str = "worker", *, concurrency: int = 50) -> Process:
        args = ["worker", "--name", name, "--concurrency", str(concurrency)]
        return await self._start(name, args, "tokenwire worker")

    async def close(self) -> None:
        for process in self.processes:
            process.kill()
        for process in self.processes:
            await process.process.wait()

    def logs(self) -> str:
        shown = [p for p in self.processes if p.log.exists()]
        return "\n".join(f"--- {p.name} ---\n{p.log.read_text()[-3000:]}" for p in shown)


def client(process: Process, **options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=process.url, timeout=httpx.Timeout(30.0), **options)
