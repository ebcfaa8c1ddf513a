"""The OpenAI-compatible HTTP API of the reference server (Starlette, served by uvicorn).

Routes: GET /health, GET /metrics (Prometheus text), GET /v1/models, POST /v1/completions, POST
/v1/chat/completions (both with "stream": true as server-sent events ending in `data: [DONE]`). Errors are OpenAI's
shape, {"error": {"message", "type", "param", "code"}}: 400 for a bad request (invalid JSON, a field out of range,
a prompt longer than the context), 401 without the API key, 404 for an unknown model, 413 for a body over the limit,
429 when the waiting queue is full, 503 while shutting down. A client that disconnects frees its batch row.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from runtime.serve.protocol import ApiError, ChatRequest, CompletionRequest, parse
from runtime.serve.scheduler import QueueFull, Request, Scheduler
from runtime.serve.text import TextStream

log = logging.getLogger("trtq.serve")

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}


@dataclass
class ServeState:
    """What the handlers need: the tokenizer, the scheduler and the limits."""

    tokenizer: Any
    scheduler: Scheduler
    metrics: Any
    model: str
    max_len: int
    end_ids: frozenset[int]
    api_key: str | None = None
    max_body: int = 4 * 2**20
    created: int = field(default_factory=lambda: int(time.time()))
    backend: str = "reference"
    draining: bool = False


def build_app(state: ServeState):
    from starlette.applications import Starlette
    from starlette.requests import Request as HttpRequest
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def error(e: ApiError, route: str) -> JSONResponse:
        state.metrics.http.labels(route, str(e.status)).inc()
        headers = {"Retry-After": "1"} if e.status == 429 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    def handler(route: str, fn):
        async def endpoint(request: HttpRequest):
            try:
                if route.startswith("/v1/"):
                    _check_key(state, request)
                resp = await fn(request)
            except ApiError as e:
                return error(e, route)
            state.metrics.http.labels(route, str(resp.status_code)).inc()
            return resp

        return endpoint

    async def health(request):
        if state.draining:
            raise ApiError(503, "shutting down")
        if not state.scheduler.alive:
            raise ApiError(503, f"the scheduler is not running: {state.scheduler.failed}")
        return JSONResponse({"status": "ok", "backend": state.backend})

    async def metrics(request):
        body, ctype = state.metrics.render()
        return Response(body, media_type=ctype)

    async def models(request):
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": state.model,
                        "object": "model",
                        "created": state.created,
                        "owned_by": "trtq",
                        "max_model_len": state.max_len,
                    }
                ],
            }
        )

    async def completions(request):
        body = await _read_json(request, state.max_body)
        req = parse(CompletionRequest, body)
        _check_model(state, req.model)
        prompts = _completion_prompts(state, req.prompt)
        if req.stream and len(prompts) > 1:
            raise ApiError(400, "stream: several prompts in one streamed request are not supported", param="prompt")
        return await _generate(state, request, req, prompts, chat=False)

    async def chat(request):
        body = await _read_json(request, state.max_body)
        req = parse(ChatRequest, body)
        _check_model(state, req.model)
        return await _generate(state, request, req, [_chat_prompt(state, req)], chat=True)

    routes = [
        Route("/health", handler("/health", health), methods=["GET"]),
        Route("/metrics", handler("/metrics", metrics), methods=["GET"]),
        Route("/v1/models", handler("/v1/models", models), methods=["GET"]),
        Route("/v1/completions", handler("/v1/completions", completions), methods=["POST"]),
        Route("/v1/chat/completions", handler("/v1/chat/completions", chat), methods=["POST"]),
    ]

    async def not_found(request, exc):
        return JSONResponse(
            ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}").body(),
            status_code=exc.status_code,
        )

    from starlette.exceptions import HTTPException

    return Starlette(routes=routes, exception_handlers={HTTPException: not_found})


# ---------------------------------------------------------------------------------------------- request checks
def _check_key(state: ServeState, request) -> None:
    if not state.api_key:
        return
    auth = request.headers.get("authorization", "")
    token = auth[7:] if auth.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(token.encode(), state.api_key.encode()):
        raise ApiError(401, "missing or wrong API key: send Authorization: Bearer <key>", code="invalid_api_key")


def _check_model(state: ServeState, name: str) -> None:
    if name != state.model:
        raise ApiError(
            404,
            f"model {name!r} does not exist: this server serves {state.model!r}",
            param="model",
            code="model_not_found",
        )


async def _read_json(request, limit: int) -> Any:
    """The body as JSON; 413 beyond ``limit`` bytes (the rest of the body is read and dropped so the client gets the
    answer rather than a reset connection), 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > 16 * limit:
        raise ApiError(
            413, f"request body of {declared} bytes is over the {limit}-byte limit", code="request_too_large"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise ApiError(413, f"request body of {size} bytes is over the {limit}-byte limit", code="request_too_large")
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None


def _completion_prompts(state: ServeState, prompt) -> list[list[int]]:
    tok = state.tokenizer
    if isinstance(prompt, str):
        items: list = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        items = [prompt]
    else:
        items = list(prompt)
    if not items:
        raise ApiError(400, "prompt: empty", param="prompt")
    out = []
    for p in items:
        ids = list(tok(p)["input_ids"]) if isinstance(p, str) else [int(t) for t in p]
        if not ids:
            raise ApiError(400, "prompt: encodes to no tokens", param="prompt")
        vocab = len(tok)
        if any(t < 0 or t >= vocab for t in ids):
            raise ApiError(400, f"prompt: token ids must be in [0, {vocab})", param="prompt")
        out.append(ids)
    return out


def _chat_prompt(state: ServeState, req: ChatRequest) -> list[int]:
    tok = state.tokenizer
    if not getattr(tok, "chat_template", None):
        raise ApiError(400, f"model {state.model!r} has no chat template: use /v1/completions", param="messages")
    try:
        msgs = [{"role": m.role, "content": m.text()} for m in req.messages]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    except ValueError as e:
        raise ApiError(400, f"messages: {e}", param="messages") from None
    except Exception as e:  # jinja2 TemplateError: the model's template refused the conversation
        raise ApiError(400, f"messages: the chat template refused them: {e}", param="messages") from None
    return list(tok(text, add_special_tokens=False)["input_ids"])


# ---------------------------------------------------------------------------------------------- generation
def _requests(state: ServeState, req, prompts: list[list[int]]) -> list[Request]:
    limit = req.limit if isinstance(req, ChatRequest) else req.max_tokens
    loop = asyncio.get_running_loop()
    out = []
    for ids in prompts:
        room = state.max_len - len(ids)
        if room < 1 or (limit is not None and len(ids) + limit > state.max_len):
            want = f" + max_tokens {limit}" if limit is not None else ""
            raise ApiError(
                400,
                f"the prompt has {len(ids)} tokens{want}, over this model's context of {state.max_len} "
                "tokens: shorten the prompt or lower max_tokens",
                param="messages" if isinstance(req, ChatRequest) else "prompt",
                code="context_length_exceeded",
            )
        top_k = 0 if req.top_k < 0 else req.top_k
        out.append(
            Request(
                prompt=ids,
                max_tokens=limit if limit is not None else room,
                temperature=req.temperature,
                top_k=top_k,
                top_p=req.top_p,
                seed=req.seed if req.seed is not None else secrets.randbits(63),
                end_ids=state.end_ids,
                ignore_eos=req.ignore_eos,
                loop=loop,
                events=asyncio.Queue(),
            )
        )
    return out


def _submit(state: ServeState, reqs: list[Request]) -> None:
    if state.draining:
        raise ApiError(503, "the server is shutting down")
    for i, r in enumerate(reqs):
        try:
            state.scheduler.submit(r)
        except QueueFull as e:
            for done in reqs[:i]:
                state.scheduler.cancel(done)
            raise ApiError(429, f"too many requests: {e}; retry later", code="rate_limit_exceeded") from None


async def _tokens(state: ServeState, r: Request, text: TextStream):
    """Text deltas of one request, until it finishes (a stop string ends it early and frees its row)."""
    while True:
        kind, value = await r.events.get()
        if kind == "token":
            delta = text.push(value)
            if delta:
                yield delta
            if text.stopped:
                state.scheduler.cancel(r)
                r.finish_reason = r.finish_reason or "stop"
                return
        elif kind == "done":
            tail = text.finish()
            if tail:
                yield tail
            return
        else:
            raise ApiError(500, str(value), code="server_error")


async def _generate(state: ServeState, request, req, prompts, chat: bool):
    from starlette.responses import JSONResponse

    reqs = _requests(state, req, prompts)
    _submit(state, reqs)
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    if req.stream:
        return EventStream(state, reqs[0], req, rid, chat)
    texts = [TextStream(state.tokenizer, req.stops) for _ in reqs]

    async def collect(r: Request, ts: TextStream) -> str:
        return "".join([d async for d in _tokens(state, r, ts)])

    work = asyncio.ensure_future(asyncio.gather(*(collect(r, t) for r, t in zip(reqs, texts, strict=True))))
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
            return JSONResponse({}, status_code=499)  # nobody is listening
        outs = work.result()
    finally:
        gone.cancel()
        for r in reqs:
            state.scheduler.cancel(r)
    usage = _usage(reqs, texts)
    created = int(time.time())
    if chat:
        choices = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": outs[0]},
                "logprobs": None,
                "finish_reason": FINISH[reqs[0].finish_reason or "stop"],
            }
        ]
        obj = "chat.completion"
    else:
        choices = [
            {"index": i, "text": o, "logprobs": None, "finish_reason": FINISH[r.finish_reason or "stop"]}
            for i, (o, r) in enumerate(zip(outs, reqs, strict=True))
        ]
        obj = "text_completion"
    return JSONResponse(
        {"id": rid, "object": obj, "created": created, "model": state.model, "choices": choices, "usage": usage}
    )


def _usage(reqs: list[Request], texts: list[TextStream]) -> dict[str, int]:
    prompt = sum(len(r.prompt) for r in reqs)
    completion = sum(len(t.ids) for t in texts)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _disconnected(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class EventStream:
    """A server-sent-events response for one streamed request; a client disconnect cancels the request at once
    (its batch row is freed at the next iteration), whether or not tokens are flowing."""

    def __init__(self, state: ServeState, r: Request, req, rid: str, chat: bool):
        self.state, self.r, self.req, self.rid, self.chat = state, r, req, rid, chat
        self.status_code = 200

    def _chunk(self, delta: str | None, finish: str | None, role: bool = False) -> bytes:
        if self.chat:
            d: dict[str, Any] = (
                {"role": "assistant", "content": ""} if role else ({} if delta is None else {"content": delta})
            )
            choice = {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        body = {
            "id": self.rid,
            "object": obj,
            "created": int(time.time()),
            "model": self.state.model,
            "choices": [choice],
        }
        return _sse(body)

    async def _body(self, send) -> None:
        text = TextStream(self.state.tokenizer, self.req.stops)
        if self.chat:
            await send({"type": "http.response.body", "body": self._chunk(None, None, role=True), "more_body": True})
        try:
            async for delta in _tokens(self.state, self.r, text):
                await send({"type": "http.response.body", "body": self._chunk(delta, None), "more_body": True})
        except ApiError as e:
            await send({"type": "http.response.body", "body": _sse(e.body()), "more_body": True})
        else:
            finish = FINISH[self.r.finish_reason or "stop"]
            await send({"type": "http.response.body", "body": self._chunk(None, finish), "more_body": True})
            if self.req.include_usage:
                obj = "chat.completion.chunk" if self.chat else "text_completion"
                usage = {
                    "id": self.rid,
                    "object": obj,
                    "created": int(time.time()),
                    "model": self.state.model,
                    "choices": [],
                    "usage": _usage([self.r], [text]),
                }
                await send({"type": "http.response.body", "body": _sse(usage), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def __call__(self, scope, receive, send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        body = asyncio.ensure_future(self._stream(send, headers))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({body, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not body.done():
                body.cancel()
            elif body.exception() is not None and not isinstance(body.exception(), OSError):
                raise body.exception()
        finally:
            gone.cancel()
            self.state.scheduler.cancel(self.r)

    async def _stream(self, send, headers) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await self._body(send)


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
