"""A bounded, open-loop load of streaming chat completions against the lab's front door,
judged stream by stream — what a client of the fleet would notice while it changes
(bench/rollout.py, tests/integration/test_rollout.py).

Requests arrive at `rate` a second with exponential gaps (an open loop: a slow fleet does not
slow the load down), each a streaming chat completion with a unique prompt and max_tokens
drawn from a range, for each model in turn. A stream is `ok` (HTTP 200, every token asked
for, a finish reason, `[DONE]`), `truncated` (200, then cut short) or `failed` (no 200, or no
stream: refused, reset, a 5xx, a timeout); its time to first token is kept. Only addresses
of the lab (198.18.0.0/15) are loaded, with at most `max_in_flight` requests open.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import random
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

LAB = ipaddress.ip_network("198.18.0.0/15")


def in_lab(address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in LAB
    except ValueError:
        return False


@dataclass
class Stream:
    started: float
    model: str
    max_tokens: int
    status: int | None = None
    ttft: float | None = None
    tokens: int = 0
    done: bool = False
    finish: str | None = None
    error: str | None = None
    ended: float | None = None

    @property
    def verdict(self) -> str:
        if self.status != 200 or (self.tokens == 0 and not self.done):
            return "failed"
        if self.done and self.finish and self.tokens >= self.max_tokens:
            return "ok"
        return "truncated"


@dataclass
class Load:
    url: str
    models: list[str]
    rate: float
    headers: dict[str, str]
    max_in_flight: int = 200
    tokens: tuple[int, int] = (64, 512)
    streams: list[Stream] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        host = urlsplit(self.url).hostname or ""
        if not in_lab(host):
            raise ValueError(f"refusing to load {host!r}: only the lab (198.18.0.0/15) is loaded")

    async def run(self, rng: random.Random) -> None:
        limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=0)
        tasks: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0), limits=limits) as client:
            i = 0
            while not self.stop.is_set():
                if len(tasks) < self.max_in_flight:
                    stream = Stream(started=time.monotonic(), model=self.models[i % len(self.models)],
                                    max_tokens=rng.randint(*self.tokens))
                    self.streams.append(stream)
                    task = asyncio.ensure_future(self.one(client, stream))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    i += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), rng.expovariate(self.rate))
            await asyncio.gather(*tasks, return_exceptions=True)

    async def one(self, client: httpx.AsyncClient, s: Stream) -> None:
        body = {"model": s.model, "stream": True, "max_tokens": s.max_tokens,
                "messages": [{"role": "user", "content": f"bench {uuid.uuid4().hex}: tell me a story"}]}
        try:
            async with client.stream("POST", self.url, json=body, headers=self.headers) as reply:
                s.status = reply.status_code
                if reply.status_code != 200:
                    s.error = f"HTTP {reply.status_code}"
                    await reply.aread()
                    return
                async for line in reply.aiter_lines():
                    self.take(s, line)
        except httpx.HTTPError as exc:
            s.error = type(exc).__name__
        finally:
            s.ended = time.monotonic()

    @staticmethod
    def take(s: Stream, line: str) -> None:
        if not line.startswith("data: "):
            return
        data = line[6:].strip()
        if data == "[DONE]":
            s.done = True
            return
        chunk = json.loads(data)
        for choice in chunk.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                s.tokens += 1
                if s.ttft is None:
                    s.ttft = time.monotonic() - s.started
            if choice.get("finish_reason"):
                s.finish = choice["finish_reason"]


def window(streams: list[Stream]) -> dict[str, Any]:
    verdicts = [s.verdict for s in streams]
    ttfts = sorted(s.ttft for s in streams if s.ttft is not None)
    errors: dict[str, int] = {}
    for s in streams:
        if s.verdict != "ok":
            key = s.error or f"{s.verdict}: {s.tokens} of {s.max_tokens} tokens"
            errors[key] = errors.get(key, 0) + 1
    return {"streams": len(streams), "ok": verdicts.count("ok"), "failed": verdicts.count("failed"),
            "truncated": verdicts.count("truncated"),
            "ttft_ms": {"p50": pct(ttfts, 50), "p95": pct(ttfts, 95), "p99": pct(ttfts, 99),
                        "max": round(ttfts[-1] * 1000) if ttfts else None},
            "not_ok": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:8])}


async def during(load: Load, run: Any, seed: int, settle: float = 3.0) -> tuple[dict[str, Any], Any]:
    """`run()` (blocking: a swarm command) in a thread while `load` streams, with `settle`
    seconds of load before and after; what the streams saw, and what `run` returned."""
    loading = asyncio.ensure_future(load.run(random.Random(seed)))
    await asyncio.sleep(settle)
    result = await asyncio.to_thread(run)
    await asyncio.sleep(settle)
    load.stop.set()
    await loading
    return window(load.streams), result


def pct(values: list[float], p: float) -> int | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0] * 1000)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] * 1000)
