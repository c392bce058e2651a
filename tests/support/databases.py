"""Real database servers for tests: a SQLite file, and a Postgres server with a fresh database.

Postgres: the server on 127.0.0.1:5432 (trust auth) when one answers; otherwise a throwaway one
started from the installed binaries (``initdb`` + ``pg_ctl``; as root they run as the
``postgres`` OS user, since initdb refuses root). When neither is possible the test is skipped,
except under ``CI=true``, where it fails: CI must never pass by skipping the Postgres backend.
Each test gets a database of its own, created empty and dropped afterwards, so tests never see
each other's rows or anyone else's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

T = TypeVar("T")

LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 5432
USERS = ("postgres", "root")
ADMIN_DATABASES = ("test", "postgres")


def sqlite_url(path: Path) -> str:
    """The async URL of a SQLite file (created on first connect)."""
    return f"sqlite+aiosqlite:///{path}"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    admin_database: str
    """A database that exists, to connect to for CREATE/DROP DATABASE."""

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    # In a thread of its own, so this never touches the event loop pytest-asyncio manages.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _execute(server: PostgresServer, sql: str) -> None:
    conn = await asyncpg.connect(
        host=server.host, port=server.port, user=server.user, database=server.admin_database
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _probe(host: str, port: int) -> PostgresServer | None:
    for user in USERS:
        for database in ADMIN_DATABASES:
            try:
                conn = await asyncpg.connect(
                    host=host, port=port, user=user, database=database, timeout=5
                )
            except (OSError, asyncpg.PostgresError, TimeoutError):
                continue
            await conn.close()
            return PostgresServer(host, port, user, database)
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Postgres is required under CI: {reason}", pytrace=False)
    pytest.skip(f"no Postgres server: {reason}")


def _binaries() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for directory in candidates:
        if (Path(directory) / "initdb").exists() and (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL_HOST, 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """Start a private Postgres on a free loopback port; stop and delete it afterwards."""
    bin_dir = _binaries()
    if bin_dir is None:
        _unavailable("no initdb/pg_ctl found")
        raise AssertionError("unreachable")
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' OS user for initdb")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="tokenwire-pg-"))
    data = root / "data"
    if prefix:
        shutil.chown(root, user="postgres")
    port = _free_port()
    pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
             "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True,
        )  # fmt: skip
        options = f"-h {LOCAL_HOST} -p {port} -k {root} -c fsync=off"
        subprocess.run(
            [*pg_ctl, "-l", str(root / "log"), "-o", options, "-w", "-t", "60", "start"],
            check=True, capture_output=True,
        )  # fmt: skip
        yield PostgresServer(LOCAL_HOST, port, "postgres", "postgres")
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """The local server on 127.0.0.1:5432 if it answers, else a throwaway one.

    ``TOKENWIRE_TEST_POSTGRES=throwaway`` skips the probe (to exercise the fallback).
    """
    server = None
    if os.environ.get("TOKENWIRE_TEST_POSTGRES") != "throwaway":
        server = _run_coroutine(_probe(LOCAL_HOST, LOCAL_PORT))
    if server is not None:
        yield server
        return
    with throwaway_postgres() as started:
        yield started


@contextmanager
def fresh_database(server: PostgresServer) -> Iterator[str]:
    """Create a uniquely named, empty database; yield its async URL; drop it afterwards."""
    name = f"tokenwire_test_{os.getpid()}_{secrets.token_hex(4)}"
    _run_coroutine(_execute(server, f'CREATE DATABASE "{name}"'))
    try:
        yield server.url(name)
    finally:
        _run_coroutine(_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
