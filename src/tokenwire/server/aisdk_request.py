"""The body ``useChat`` sends (the AI SDK's ``DefaultChatTransport``), as a tokenwire turn.

The transport POSTs ``{"id": <chat id>, "messages": [<UIMessage>...], "trigger":
"submit-message" | "regenerate-message", "messageId": <id> | absent}``, merged over whatever
the app passed as the transport's or ``sendMessage``'s ``body``: tokenwire's options travel
there, under their ``POST /v1/streams`` names (``route``, ``extraction``, ``deadlines``, ...).
Any other field is refused, as ``POST /v1/streams`` refuses one: a typo is an error the app
sees, not a default it silently gets.

A UI message's text is the text of its ``text`` parts. Parts the model cannot take as text are
left out (reasoning, sources, tool and data parts, step markers); a ``file`` part in a user or
system message is refused, since answering without the attachment would not be answering what
was asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..engine.request import RequestError, validation_message

SDK_FIELDS = ("id", "messages", "trigger", "messageId")
"""The fields the transport itself sends."""

TURN_OPTIONS = (
    "route",
    "max_tokens",
    "temperature",
    "stop",
    "conversation_id",
    "metadata",
    "on_disconnect",
    "deadlines",
    "extraction",
    "script",
)
"""The ``POST /v1/streams`` fields accepted next to them (validated as that endpoint does)."""

_REFUSED = {
    "prompt": "send the conversation as `messages` (UI messages with text parts)",
    "background": "a background turn answers 202, not a message stream: use POST /v1/streams",
}


class UIMessage(BaseModel):
    """A UI message as the SDK sends it. Only ``role`` and ``parts`` matter here; its other
    keys (``metadata``, ...) belong to the client and are passed over."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str | None = None
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]] = Field(max_length=10_000)


class _Body(BaseModel):
    """The transport's own fields (tokenwire's options are checked by the turn request)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(default=None, max_length=200)
    messages: list[UIMessage] = Field(min_length=1, max_length=10_000)
    trigger: str | None = Field(default=None, max_length=100)
    messageId: str | None = Field(default=None, max_length=200)  # the SDK's name


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """A chat request, translated."""

    chat_id: str | None
    """The client's chat id (``useChat``'s ``id``), by which it may reconnect."""
    message_id: str | None
    """The id the answer's message must carry: the last message's when it is the assistant's
    (the answer continues it), else None (the message is named after the stream)."""
    request: dict[str, Any]
    """The turn, as a ``POST /v1/streams`` body."""


def chat_turn(body: Mapping[str, Any]) -> ChatTurn:
    """Translate the transport's body. Raises :class:`RequestError` (422 ``invalid_request``)
    for a body that is not one, an unknown field, or a part tokenwire cannot send."""
    for name in body:
        if name in _REFUSED:
            raise RequestError(
                "invalid_request", f"`{name}` is not accepted here: {_REFUSED[name]}"
            )
        if name not in SDK_FIELDS and name not in TURN_OPTIONS:
            raise RequestError(
                "invalid_request",
                f"unknown field `{name}`: the body takes the AI SDK's {', '.join(SDK_FIELDS)} "
                f"and tokenwire's {', '.join(TURN_OPTIONS)}",
            )
    try:
        parsed = _Body.model_validate({k: v for k, v in body.items() if k in SDK_FIELDS})
    except ValidationError as exc:
        raise RequestError("invalid_request", validation_message(exc)) from None
    messages = parsed.messages
    keep = list(range(len(messages)))
    if body.get("conversation_id") is not None:
        # The server holds the conversation's earlier turns and adds them itself: send only
        # what is new since the last answer (and the system prompt, which history omits).
        answered = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
        keep = [i for i in keep if i > answered or messages[i].role == "system"]
    chat: list[dict[str, str]] = []
    for index in keep:
        text = _text(index, messages[index])
        if text:
            chat.append({"role": messages[index].role, "content": text})
    last = messages[-1]
    request = {"messages": chat, **{k: body[k] for k in TURN_OPTIONS if k in body}}
    return ChatTurn(
        chat_id=parsed.id,
        message_id=last.id if last.role == "assistant" and last.id else None,
        request=request,
    )


def _text(index: int, message: UIMessage) -> str:
    texts: list[str] = []
    for j, part in enumerate(message.parts):
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(
                    "invalid_request", f"messages.{index}.parts.{j}.text: must be a string"
                )
            if text:
                texts.append(text)
        elif kind == "file" and message.role != "assistant":
            raise RequestError(
                "invalid_request",
                f"messages.{index}.parts.{j}: file parts are not supported (tokenwire sends "
                "text only)",
            )
    return "\n\n".join(texts)
