from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..support.cluster import Cluster
from ..support.redis import RedisServer


@pytest.fixture
async def cluster(
    redis: RedisServer, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Cluster]:
    deployment = Cluster(redis, tmp_path)
    try:
        yield deployment
    finally:
        await deployment.close()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(deployment.logs())
