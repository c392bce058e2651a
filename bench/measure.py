"""What every benchmark script here needs: free ports, CPU accounting from /proc, waiting for
a quiet machine (other sessions share it), percentiles, and rewriting its own section of
docs/PERFORMANCE.md. The scripts run as ``python bench/NAME.py``, so ``bench/`` is on the path
and they ``import measure``."""

from __future__ import annotations

import array
import os
import socket
import time
from pathlib import Path

CLK = os.sysconf("SC_CLK_TCK")
DOC = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / CLK


def wait_quiet(limit: float, threshold: float = 0.3) -> float:
    """Wait (up to ``limit`` s) until the machine is nearly idle; return the busy cores seen
    last. Other sessions share this machine (test suites, model runs): a cell measured while
    they run is not comparable, so each cell first waits for them."""
    deadline = time.monotonic() + limit
    while True:
        b0 = machine_busy()
        time.sleep(1.0)
        busy = machine_busy() - b0
        if busy < threshold or time.monotonic() > deadline:
            return busy


def pct(sorted_values: list[float] | array.array[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, by nearest index; NaN for none."""
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[i])


def write_section(section: str, begin: str, end: str, doc: Path = DOC) -> None:
    """Replace the section between ``begin`` and ``end`` in ``doc``, or append it."""
    text = doc.read_text() if doc.exists() else "# Performance\n\n"
    if begin in text and end in text:
        a = text.index(begin)
        b = text.index(end) + len(end)
        text = text[:a] + section.rstrip("\n") + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    doc.write_text(text)
