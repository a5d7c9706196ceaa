"""The benchmark peer: a small FastAPI + sse-starlette app streaming the same
synthetic events as tidewire's native API, with the same architecture (a run is a
task writing to an in-memory log; every stream, the POST's included, follows the
log), so the two are compared on the same work.

It stores nothing: tidewire also writes every turn to SQLite, so the comparison
favours the peer.

    uvicorn --app-dir bench/peers app:app --port 18081
"""

import asyncio
import hashlib
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

WORDS = (
    "stream token answer river signal quiet bright model event ocean current steady "
    "reply thread gentle swift wire harbor light value story source tide moment clear "
    "simple detail context question useful pattern careful window result open measure "
    "balance record echo path shore breeze compass anchor lantern meadow summit voyage "
    "beacon harvest granite silver orbit canvas fabric rhythm horizon ember crystal "
    "atlas journey garden thunder willow"
).split()

app = FastAPI()
runs: dict[str, "Run"] = {}


class Run:
    """An append-only log of (name, json) events and a condition to wait on."""

    def __init__(self, run_id: str):
        self.id = run_id
        self.events: list[tuple[str, str]] = []
        self.done = False
        self.changed = asyncio.Condition()

    async def append(self, name: str, data: dict) -> None:
        async with self.changed:
            self.events.append((name, json.dumps(data, separators=(",", ":"))))
            if name == "done":
                self.done = True
            self.changed.notify_all()

    async def follow(self, after: int):
        """Yields the events after `after`, then live ones, until done."""
        cursor = after
        while True:
            async with self.changed:
                while cursor >= len(self.events) and not self.done:
                    await self.changed.wait()
                batch = self.events[cursor:]
            for name, data in batch:
                cursor += 1
                yield ServerSentEvent(data=data, event=name, id=str(cursor))
            if self.done and cursor >= len(self.events):
                return


async def generate(run: Run, message: str, max_tokens: int, rate: float) -> None:
    seed = int.from_bytes(hashlib.blake2b(message.encode(), digest_size=8).digest(), "little")
    conversation_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
    await run.append(
        "run",
        {
            "run_id": run.id,
            "conversation_id": conversation_id,
            "message_id": message_id,
            "events_url": f"/api/runs/{run.id}/events",
        },
    )
    await run.append("stage", {"stage": "generation"})
    start = time.monotonic()
    for n in range(max_tokens):
        if rate > 0:
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elif n % 32 == 0:
            await asyncio.sleep(0)
        seed = (seed * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        word = WORDS[(seed >> 33) % len(WORDS)]
        await run.append("token", {"token": word if n == 0 else " " + word})
    total_ms = int((time.monotonic() - start) * 1000)
    await run.append(
        "metadata",
        {
            "message_id": message_id,
            "model": "synthetic",
            "usage": {"prompt_tokens": len(message.split()), "completion_tokens": max_tokens,
                      "total_tokens": len(message.split()) + max_tokens},
            "timing": {"ttft_ms": 0, "total_ms": total_ms},
        },
    )
    await run.append("done", {"status": "complete"})
    # Finished runs stay attachable for a while, as in tidewire.
    await asyncio.sleep(600)
    runs.pop(run.id, None)


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}


@app.post("/api/chat")
async def chat(request: Request):
    body = await request.json()
    options = body.get("options") or {}
    run = Run(str(uuid.uuid4()))
    runs[run.id] = run
    task = asyncio.create_task(
        generate(run, body["message"], int(options.get("max_tokens", 64)),
                 float(options.get("tokens_per_second", 30)))
    )
    run.task = task  # keep a reference so the task is not collected
    return EventSourceResponse(run.follow(0), ping=15)


@app.get("/api/runs/{run_id}/events")
async def events(run_id: str, request: Request):
    run = runs.get(run_id)
    if run is None:
        return JSONResponse({"error": {"code": "run_not_found", "message": run_id}}, status_code=404)
    after = int(request.headers.get("last-event-id") or 0)
    return EventSourceResponse(run.follow(after), ping=15)
