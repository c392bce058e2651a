"""``tokenwire kb``: add files to the knowledge base, search it, list and remove documents.

The ``tokenwire`` command adds the parser with :func:`add_kb_parser` and runs an action with
:func:`run_kb`, passing the knowledge base URL its configuration names (``--db`` overrides it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from sqlalchemy.exc import SQLAlchemyError

from .base import KnowledgeBase, Passage
from .kb import open_knowledge_base
from .query import query_terms

SNIPPET_CHARS = 200


def add_kb_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    resolve_db_url: Callable[[argparse.Namespace], str] | None = None,
    common: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """Add ``kb`` (actions ``add``, ``search``, ``list``, ``remove``) to ``sub``; returns it.

    ``common`` is applied to every action's parser (say, to add ``--config``). With
    ``resolve_db_url``, ``func`` is set to ``run_kb(args, resolve_db_url(args))``; else the
    caller sets it (``kb.set_defaults(func=...)``).
    """
    kb = sub.add_parser("kb", help="the built-in knowledge base: add files, search, list, remove")
    actions = kb.add_subparsers(required=True, metavar="ACTION", dest="kb_action")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "--db", metavar="URL", help="knowledge base: SQLite path or URL, or Postgres URL"
        )
        if common is not None:
            common(parser)
        return parser

    add = action("add", "add (or refresh) Markdown, HTML and text files, directories walked")
    add.add_argument("paths", nargs="+", metavar="PATH", type=Path)
    add.add_argument(
        "--base-url",
        metavar="URL",
        help="the files' URLs: URL joined with each path relative to the directory given",
    )

    search = action("search", "the passages that best answer a question")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("--limit", type=int, default=4, help="passages at most (default: 4)")
    search.add_argument("--json", action="store_true", help="print the passages as JSON")

    action("list", "the documents in the knowledge base")

    remove = action("remove", "remove a document (by its path, id or URL)")
    remove.add_argument("source", metavar="SOURCE")

    if resolve_db_url is not None:
        resolver = resolve_db_url
        kb.set_defaults(func=lambda args: run_kb(args, resolver(args)))
    return kb


def run_kb(args: argparse.Namespace, db_url: str) -> int:
    """Run the ``kb`` action ``args`` names against ``args.db`` if given, else ``db_url``;
    the exit code (2: bad arguments, such as paths that do not exist)."""
    url: str = getattr(args, "db", None) or db_url
    action: str = args.kb_action
    if action == "add":
        missing = [str(path) for path in args.paths if not path.exists()]
        if missing:
            for path in missing:
                print(f"tokenwire kb: no such file or directory: {path}", file=sys.stderr)
            return 2
    if action == "search" and args.limit < 1:
        print("tokenwire kb: --limit must be at least 1", file=sys.stderr)
        return 2
    try:
        knowledge_base = open_knowledge_base(url)
    except ValueError as exc:
        print(f"tokenwire kb: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(knowledge_base, args, sys.stdout))
    except (OSError, sqlite3.Error, SQLAlchemyError) as exc:
        print(f"tokenwire kb: the knowledge base failed: {exc}", file=sys.stderr)
        return 1


async def _run(knowledge_base: KnowledgeBase, args: argparse.Namespace, out: TextIO) -> int:
    async with knowledge_base:
        if args.kb_action == "add":
            return await _add(knowledge_base, args, out)
        if args.kb_action == "search":
            return await _search(knowledge_base, args, out)
        if args.kb_action == "list":
            return await _list(knowledge_base, out)
        if args.kb_action == "remove":
            return await _remove(knowledge_base, args, out)
    raise ValueError(f"unknown kb action {args.kb_action!r}")


async def _add(knowledge_base: KnowledgeBase, args: argparse.Namespace, out: TextIO) -> int:
    paths: list[Path] = args.paths
    results = await knowledge_base.add_paths(paths, base_url=args.base_url)
    for result in results:
        name = _display_path(result.source)
        if result.status == "skipped":
            print(f"skipped {name}: {result.reason}", file=out)
        elif result.status == "unchanged":
            print(f"unchanged {name}: {_chunks(result.chunks)}", file=out)
        else:
            print(f"{result.status} {name}: {_chunks(result.chunks)}", file=out)
    if not results:
        print("no Markdown, HTML or text files found", file=out)
    return 0


async def _search(knowledge_base: KnowledgeBase, args: argparse.Namespace, out: TextIO) -> int:
    passages = await knowledge_base.search(args.query, limit=args.limit)
    if args.json:
        print(json.dumps([asdict(p) for p in passages], ensure_ascii=False, indent=2), file=out)
        return 0
    if not passages:
        print("no passages match", file=out)
        return 0
    for rank, passage in enumerate(passages, 1):
        where = f" ({passage.url})" if passage.url else ""
        print(f"{rank}. {passage.title}{where}  {passage.score:.3f}", file=out)
        print(f"   {snippet(passage, args.query)}", file=out)
    return 0


async def _list(knowledge_base: KnowledgeBase, out: TextIO) -> int:
    documents = await knowledge_base.documents()
    for document in documents:
        print(
            f"{_display_path(document['source'])}  {document['title']}"
            f"  {_chunks(document['chunks'])}  {document['url'] or ''}".rstrip(),
            file=out,
        )
    stats = await knowledge_base.stats()
    print(f"{_count(stats['documents'], 'document')}, {_chunks(stats['chunks'])}", file=out)
    return 0


async def _remove(knowledge_base: KnowledgeBase, args: argparse.Namespace, out: TextIO) -> int:
    if await knowledge_base.remove(args.source):
        print(f"removed {args.source}", file=out)
        return 0
    print(f"tokenwire kb: not in the knowledge base: {args.source}", file=sys.stderr)
    return 1


def snippet(passage: Passage, query: str, width: int = SNIPPET_CHARS) -> str:
    """About ``width`` characters of the passage on one line, around the first query term."""
    flat = " ".join(passage.text.split())
    if len(flat) <= width:
        return flat
    start = 0
    terms = query_terms(query)
    if terms:
        pattern = re.compile("|".join(re.escape(term[:5]) for term in terms), re.IGNORECASE)
        match = pattern.search(flat)
        if match and match.start() > width // 3:
            start = flat.rfind(" ", 0, match.start() - width // 3) + 1
    end = start + width
    if end < len(flat):
        cut = flat.rfind(" ", start, end)
        end = cut if cut > start else end
    return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _chunks(count: int) -> str:
    return _count(count, "chunk")


def _display_path(source: str) -> str:
    """``source`` relative to the working directory when under it."""
    path = Path(source)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return source


__all__ = ["add_kb_parser", "run_kb", "snippet"]
