"""Rank 0's side of continuous batching: a bounded queue of requests, the iteration loop, and token delivery.

The HTTP handlers (asyncio) `submit` requests and read their events from an asyncio.Queue; the loop runs in one
thread: every iteration it frees the rows of finished or cancelled sequences, admits waiting requests into free
rows (up to max_batch_size), runs the plan (broadcast to the other ranks first), and hands each request its new
tokens. A request finishes at an end-of-sequence id (unless ignore_eos), at max_tokens, or when its handler cancels
it (a disconnected client, or a stop string seen in the text), which frees its row at the next iteration.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from runtime.serve.engine import Admit, BatchEngine, Plan, remove_row

log = logging.getLogger("trtq.serve")

HEARTBEAT_S = 20.0  # an idle rank 0 still broadcasts this often, so the other ranks' gloo waits never time out


class QueueFull(Exception):
    """The waiting queue is at its bound: the server answers 429."""


@dataclass
class Request:
    """One sequence to generate. ``events`` receives ("token", id), ("done", reason) or ("error", message)."""

    prompt: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    end_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False
    loop: Any = None  # the asyncio loop of the handler
    events: Any = None  # asyncio.Queue, filled from the scheduler thread
    id: int = field(default_factory=itertools.count().__next__)
    cancelled: bool = False
    generated: int = 0
    finish_reason: str | None = None
    arrival: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    done_at: float | None = None

    def _emit(self, *event) -> None:
        if self.loop is None or self.events is None:
            return
        with contextlib.suppress(RuntimeError):  # the handler's loop is gone (shutdown)
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Channel:
    """Broadcasts each plan from rank 0 to the other ranks (torch.distributed over the runner's gloo group)."""

    def __init__(self, world_size: int):
        self.world_size = world_size

    def send(self, plan: Plan) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.broadcast_object_list([plan], src=0)

    def recv(self) -> Plan:
        import torch.distributed as dist

        box = [None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def worker_loop(engine: BatchEngine, channel: Channel) -> None:
    """Ranks other than 0: apply every plan rank 0 broadcasts, until it says stop."""
    while True:
        plan = channel.recv()
        if plan.stop:
            return
        if not plan.empty:
            engine.apply(plan)


class Scheduler:
    def __init__(self, engine: BatchEngine, channel: Channel, max_queue: int, metrics=None):
        self.engine, self.channel = engine, channel
        self.max_queue = max_queue
        self.metrics = metrics
        self.waiting: collections.deque[Request] = collections.deque()
        self.rows: list[Request] = []  # the request in each engine row (same order and compaction as the engine)
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.failed: BaseException | None = None
        self.steps = 0

    # ---------------------------------------------------------------------------------------------- handler side
    def submit(self, req: Request) -> None:
        with self._cv:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are already waiting (--max-queue {self.max_queue})")
            self.waiting.append(req)
            self._gauges()
            self._cv.notify()

    def cancel(self, req: Request) -> None:
        """The handler is done with ``req`` (client gone, stop string): free its row at the next iteration."""
        if req.finish_reason is None:
            req.cancelled = True
            with self._cv:
                self._cv.notify()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.failed is None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="trtq-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is running and waiting, then tell the other ranks to leave; returns when the loop ended."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---------------------------------------------------------------------------------------------- the loop
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # a bug or a broken rank: fail everything in flight, say why once
            self.failed = e
            log.error("the scheduler stopped: %s\n%s", e, traceback.format_exc())
            for req in self.rows + list(self.waiting):
                req._emit("error", f"the server failed: {e}")
            self.rows, self.waiting = [], collections.deque()
            with contextlib.suppress(Exception):  # the other ranks may be gone already
                self.channel.send(Plan(stop=True))

    def _loop(self) -> None:
        last_send = time.monotonic()
        while True:
            with self._cv:
                while not (self.waiting or self.rows or self._stopping):
                    if not self._cv.wait(timeout=HEARTBEAT_S) and self.channel.world_size > 1:
                        break  # idle: send a heartbeat
                if self._stopping and not self.waiting and not self.rows:
                    self.channel.send(Plan(stop=True))
                    return
                plan, admitted = self._plan()
            if plan.empty:
                if self.channel.world_size > 1 and time.monotonic() - last_send >= HEARTBEAT_S:
                    self.channel.send(plan)
                    last_send = time.monotonic()
                continue
            self.channel.send(plan)
            last_send = time.monotonic()
            result = self.engine.apply(plan)
            self.steps += 1
            now = time.perf_counter()
            for req, tok in zip(admitted, result.first, strict=True):
                req.first_token = now
                self._deliver(req, tok, now)
            if result.decoded:
                if self.metrics is not None:
                    self.metrics.batch_size.observe(len(result.decoded))
                for req, tok in zip(self.rows, result.decoded, strict=True):
                    if req.finish_reason is None and not req.cancelled:
                        self._deliver(req, tok, now)
            with self._cv:
                self._gauges()

    def _plan(self) -> tuple[Plan, list[Request]]:
        """Under the lock: the rows to free, the requests to admit, whether to decode."""
        free = [i for i, r in enumerate(self.rows) if r.finish_reason is not None or r.cancelled]
        for i in sorted(free, reverse=True):
            req = self.rows[i]
            if req.finish_reason is None:  # cancelled by its handler
                self._finish(req, "cancelled")
            remove_row(self.rows, i)
        admitted: list[Request] = []
        while self.waiting and len(self.rows) < self.engine.max_rows:
            req = self.waiting.popleft()
            if req.cancelled:
                self._finish(req, "cancelled")
                continue
            admitted.append(req)
            self.rows.append(req)
        admits = tuple(Admit(tuple(r.prompt), r.temperature, r.top_k, r.top_p, r.seed) for r in admitted)
        return Plan(free=tuple(free), admit=admits, decode=bool(self.rows)), admitted

    def _deliver(self, req: Request, tok: int, now: float) -> None:
        req.generated += 1
        if not req.ignore_eos and tok in req.end_ids:
            self._finish(req, "eos", now)
            return
        req._emit("token", tok)
        if req.generated >= req.max_tokens:
            self._finish(req, "length", now)

    def _finish(self, req: Request, reason: str, now: float | None = None) -> None:
        req.finish_reason = reason
        req.done_at = now or time.perf_counter()
        req._emit("done", reason)
        if self.metrics is not None:
            self.metrics.finished(req)

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.running.set(len(self.rows))
            self.metrics.waiting.set(len(self.waiting))
