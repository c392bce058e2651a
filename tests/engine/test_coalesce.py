from __future__ import annotations

from tokenwire.engine.coalesce import Coalescer


def test_first_push_goes_out_and_opens_a_window() -> None:
    c = Coalescer(window_s=0.015, max_chars=100)
    assert c.push("a", now=0.0) == "a"
    assert c.push("b", now=0.005) is None
    assert c.due_at == 0.015
    assert c.push("c", now=0.010) is None
    assert c.flush(now=0.015) == "bc"
    assert c.due_at is None


def test_text_after_the_window_closed_goes_out_at_once() -> None:
    c = Coalescer(window_s=0.015, max_chars=100)
    c.push("a", now=0.0)
    assert c.push("b", now=0.020) == "b"


def test_arrival_after_due_time_flushes_everything_pending() -> None:
    c = Coalescer(window_s=0.015, max_chars=100)
    c.push("a", now=0.0)
    assert c.push("b", now=0.001) is None
    assert c.push("c", now=0.016) == "bc"


def test_max_chars_flushes_early() -> None:
    c = Coalescer(window_s=10, max_chars=4)
    c.push("a", now=0)
    assert c.push("bb", now=0.001) is None
    assert c.push("cc", now=0.002) == "bbcc"


def test_flush_with_nothing_pending() -> None:
    assert Coalescer(0.01, 10).flush(now=1.0) is None
