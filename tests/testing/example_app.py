"""A small application built on tokenwire, used as the example of docs/testing.md.

Customers post product reviews. The app answers each with a short reply (streamed to the
browser through tokenwire's own endpoints, mounted under ``/llm``) and, on the system channel,
extracts the review's sentiment; negative reviews land on a support dashboard.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from tokenwire import Done, Engine
from tokenwire.router import FieldEquals
from tokenwire.server import create_router, engine_lifespan

REVIEW = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "product": {"type": "string"},
    },
    "required": ["sentiment", "product"],
}


def create_review_app(engine: Engine) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with engine_lifespan(engine):
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(create_router(engine), prefix="/llm")
    app.state.dashboard = []

    def escalate(record: dict[str, Any]) -> None:
        app.state.dashboard.append(record["structured"]["data"])

    engine.router.route(
        "support_dashboard",
        FieldEquals(field="structured.data.sentiment", equals="negative"),
        escalate,
    )

    @app.post("/reviews")
    async def post_review(review: dict[str, Any]) -> dict[str, Any]:
        handle = await engine.submit(
            {
                "prompt": f"Reply to this review in one sentence: {review['text']}",
                "extraction": {"schema": REVIEW, "strategy": "sequential"},
                # Only for the scripted provider in tests; a real route ignores nothing here,
                # so the app passes it through when the test asks.
                **({"script": review["script"]} if "script" in review else {}),
            }
        )
        done = await handle.wait()
        if not isinstance(done, Done):
            return {"stream_id": handle.stream_id, "error": done.code}
        return {"stream_id": handle.stream_id, "reply": done.answer, "review": done.structured}

    return app
