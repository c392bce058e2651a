"""Structured output, sans-I/O: text in, results out. No asyncio, no network.

- :mod:`.inline` splits a streamed answer from its ``<json>`` block (the ``inline`` strategy);
- :mod:`.partial` previews the object while its JSON streams (``structured.partial``);
- :mod:`.prefix` keeps of a preview only what can still become valid under the schema;
- :mod:`.repair` parses a model's JSON, repairing only what is unambiguous;
- :mod:`.schema` and :mod:`.validate` resolve and check JSON Schemas;
- :mod:`.strategy` is the request's ``extraction`` field and the ``auto`` rule;
- :mod:`.prompt` builds the extraction and re-ask prompts;
- :mod:`.fingerprint` hashes the answer a result was extracted from;
- :mod:`.bounds` bounds a schema's strings and arrays for a constrained decoder.
"""

from .bounds import bounded_schema
from .fingerprint import answer_hash
from .inline import DEFAULT_END, DEFAULT_START, InlineOutput, InlineSplitter, inline_instructions
from .partial import UNCHANGED, PartialJSON
from .prefix import CLOSED, HIDDEN, OpenTail, PrefixValidator, valid_prefix
from .prompt import extraction_messages, extraction_prompt, reask_messages
from .repair import ParseOutcome, loads, parse_and_repair
from .schema import ResolvedSchema, SchemaRegistry, check_schema
from .strategy import ExtractionSpec, Strategy, choose_strategy
from .validate import SchemaIssue, validate

__all__ = [
    "CLOSED",
    "DEFAULT_END",
    "DEFAULT_START",
    "HIDDEN",
    "UNCHANGED",
    "ExtractionSpec",
    "InlineOutput",
    "InlineSplitter",
    "OpenTail",
    "ParseOutcome",
    "PartialJSON",
    "PrefixValidator",
    "ResolvedSchema",
    "SchemaIssue",
    "SchemaRegistry",
    "Strategy",
    "answer_hash",
    "bounded_schema",
    "check_schema",
    "choose_strategy",
    "extraction_messages",
    "extraction_prompt",
    "inline_instructions",
    "loads",
    "parse_and_repair",
    "reask_messages",
    "valid_prefix",
    "validate",
]
