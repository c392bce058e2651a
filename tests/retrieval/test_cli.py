# ruff: noqa: RUF001 - chunk titles join headings with U+203A, a look-alike of ">"
"""``tokenwire kb``: the argparse wiring and what each action prints, on a real SQLite file
(and the search on Postgres too)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from tests.retrieval.conftest import CORPUS
from tests.support.databases import sqlite_url
from tokenwire.retrieval import add_kb_parser, run_kb


def parser(db_url: str) -> argparse.ArgumentParser:
    """A ``tokenwire``-like parser whose ``kb`` resolves the URL as the CLI's config would."""
    root = argparse.ArgumentParser(prog="tokenwire")
    sub = root.add_subparsers(required=True, metavar="COMMAND")
    add_kb_parser(sub, resolve_db_url=lambda _args: db_url)
    return root


def kb(db_url: str, *argv: str) -> int:
    args = parser(db_url).parse_args(["kb", *argv])
    result: int = args.func(args)
    return result


@pytest.fixture
def db(tmp_path: Path) -> str:
    return sqlite_url(tmp_path / "tokenwire.db")


@pytest.fixture
def docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the corpus, in the working directory."""
    shutil.copytree(CORPUS, tmp_path / "docs")
    monkeypatch.chdir(tmp_path)
    return Path("docs")


def test_add_prints_a_line_per_file(
    db: str, docs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kb(db, "add", str(docs)) == 0
    assert capsys.readouterr().out.splitlines() == [
        "added docs/harbor-cafe.txt: 1 chunk",
        "added docs/products/lumen-kettle-faq.markdown: 2 chunks",
        "added docs/products/lumen-kettle.md: 3 chunks",
        "added docs/products/orbit-bike-lock.md: 3 chunks",
        "added docs/tidewater-ferry.html: 4 chunks",
    ]
    (docs / "harbor-cafe.txt").write_text("Harbor Café\n\nNow open on Sundays too.\n")
    (docs / "slides.pdf").write_bytes(b"%PDF")
    assert (
        kb(db, "add", str(docs / "harbor-cafe.txt"), str(docs / "products"), "docs/slides.pdf") == 0
    )
    assert capsys.readouterr().out.splitlines() == [
        "updated docs/harbor-cafe.txt: 1 chunk",
        "unchanged docs/products/lumen-kettle-faq.markdown: 2 chunks",
        "unchanged docs/products/lumen-kettle.md: 3 chunks",
        "unchanged docs/products/orbit-bike-lock.md: 3 chunks",
        "skipped docs/slides.pdf: unsupported file type '.pdf'",
    ]


def test_add_with_missing_paths_adds_nothing_and_exits_2(
    db: str, docs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kb(db, "add", str(docs), "nope.md", "gone/") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "tokenwire kb: no such file or directory: nope.md",
        "tokenwire kb: no such file or directory: gone",
    ]
    assert kb(db, "list") == 0
    assert capsys.readouterr().out == "0 documents, 0 chunks\n"


def test_add_with_base_url(db: str, docs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kb(db, "add", str(docs), "--base-url", "https://docs.example.com/") == 0
    capsys.readouterr()
    assert kb(db, "search", "first ferry on weekdays", "--limit", "1") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(
        "1. Tidewater Ferry Schedule › Weekday crossings "
        "(https://docs.example.com/tidewater-ferry.html#weekday-crossings)  "
    )
    assert out[1] == (
        "   The first Tidewater ferry leaves Port Ellis at 6:15 am on weekdays. After that a "
        "ferry leaves every 45 minutes; the last one leaves Gull Island at 9:30 pm."
    )
    assert len(out) == 2


def test_search_prints_ranked_passages(
    database_url: str, docs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kb(database_url, "add", str(docs)) == 0
    capsys.readouterr()
    assert kb(database_url, "search", "How often should I descale the Lumen kettle?") == 0
    lines = capsys.readouterr().out.splitlines()
    kettle = (docs / "products" / "lumen-kettle.md").resolve().as_uri()
    assert lines[0].startswith(f"1. Lumen Kettle › Descaling ({kettle}#descaling)  ")
    float(lines[0].rsplit("  ", 1)[1])
    assert lines[1].startswith("   The Lumen kettle should be descaled every 4 weeks")
    assert lines[1].endswith("…")
    assert len(lines[1]) <= 3 + 201
    assert lines[2].startswith("2. ")
    assert len(lines) == 8


def test_search_json(db: str, docs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kb(db, "add", str(docs))
    capsys.readouterr()
    assert kb(db, "search", "Orbit reset code", "--json", "--limit", "2") == 0
    passages = json.loads(capsys.readouterr().out)
    assert [p["title"] for p in passages] == [
        "Orbit Bike Lock › Resetting the combination code",
        "Orbit Bike Lock › Forgotten code",
    ]
    assert set(passages[0]) == {"id", "document_id", "title", "url", "text", "score"}
    assert kb(db, "search", "what is it?", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert kb(db, "search", "zeppelin") == 0
    assert capsys.readouterr().out == "no passages match\n"
    assert kb(db, "search", "kettle", "--limit", "0") == 2


def test_list_and_remove(db: str, docs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kb(db, "add", str(docs))
    capsys.readouterr()
    assert kb(db, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "docs/harbor-cafe.txt  Harbor Café opening hours  1 chunk  "
        + (docs / "harbor-cafe.txt").resolve().as_uri()
    )
    assert lines[-1] == "5 documents, 13 chunks"
    assert len(lines) == 6

    assert kb(db, "remove", "docs/harbor-cafe.txt") == 0
    assert capsys.readouterr().out == "removed docs/harbor-cafe.txt\n"
    assert kb(db, "remove", "docs/harbor-cafe.txt") == 1
    assert (
        capsys.readouterr().err == "tokenwire kb: not in the knowledge base: docs/harbor-cafe.txt\n"
    )
    kb(db, "list")
    assert capsys.readouterr().out.splitlines()[-1] == "4 documents, 12 chunks"


def test_db_overrides_the_resolved_url(
    tmp_path: Path, docs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.db"
    # The lead's wiring: parse, then run_kb with the URL from the config; --db wins.
    root = argparse.ArgumentParser(prog="tokenwire")
    add_kb_parser(root.add_subparsers(required=True))
    args = root.parse_args(["kb", "add", str(docs / "harbor-cafe.txt"), "--db", str(other)])
    assert run_kb(args, "/nonexistent/dir/never-used.db") == 0
    assert other.exists()
    assert not Path("/nonexistent/dir/never-used.db").exists()
    args = root.parse_args(["kb", "list"])
    assert run_kb(args, f"sqlite:///{other}") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 document, 1 chunk"


def test_common_options_and_a_bad_url(capsys: pytest.CaptureFixture[str]) -> None:
    root = argparse.ArgumentParser(prog="tokenwire")
    add_kb_parser(
        root.add_subparsers(required=True),
        common=lambda p: p.add_argument("--config", help="TOML config file"),
    )
    args = root.parse_args(["kb", "search", "kettle", "--config", "tw.toml"])
    assert args.config == "tw.toml"
    assert run_kb(args, "mysql://u@127.0.0.1/x") == 2
    assert "unsupported knowledge base URL" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["sqlite", "postgres"])
def test_a_knowledge_base_that_cannot_be_opened_exits_1(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("")
    db = str(tmp_path / "a-file" / "kb.db") if where == "sqlite" else "postgresql://u@127.0.0.1:9/x"
    assert kb(db, "search", "kettle") == 1
    assert capsys.readouterr().err.startswith("tokenwire kb: the knowledge base failed: ")


def test_an_action_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser("x.db").parse_args(["kb"])
    assert "ACTION" in capsys.readouterr().err
