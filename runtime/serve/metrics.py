"""Prometheus metrics of the reference server (`GET /metrics`, text exposition format), one registry per server.

Names follow vLLM's and TensorRT-LLM's serving metrics where they overlap (time to first token, time per output
token, end-to-end latency, running/waiting requests), prefixed `trtq_`.
"""

from __future__ import annotations

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TPOT = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("trtq_requests", "Finished requests by finish reason", ["reason"], registry=r)
        self.http = Counter(
            "trtq_http_responses", "HTTP responses by route and status", ["route", "status"], registry=r
        )
        self.running = Gauge("trtq_requests_running", "Sequences in the running batch", registry=r)
        self.waiting = Gauge("trtq_requests_waiting", "Requests waiting for a batch row", registry=r)
        self.prompt_tokens = Counter("trtq_prompt_tokens", "Prompt tokens prefilled", registry=r)
        self.generation_tokens = Counter("trtq_generation_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram(
            "trtq_time_to_first_token_seconds", "Arrival to first token", buckets=_LATENCY, registry=r
        )
        self.tpot = Histogram(
            "trtq_time_per_output_token_seconds", "Mean time per further token of a request", buckets=_TPOT, registry=r
        )
        self.e2e = Histogram("trtq_e2e_request_latency_seconds", "Arrival to last token", buckets=_LATENCY, registry=r)
        self.batch_size = Histogram(
            "trtq_decode_batch_size",
            "Sequences per decode step",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )

    def finished(self, req) -> None:
        """A request left the scheduler (any reason): count it and its latencies."""
        self.requests.labels(req.finish_reason).inc()
        if req.first_token is None:
            return
        self.prompt_tokens.inc(len(req.prompt))
        self.generation_tokens.inc(req.generated)
        self.ttft.observe(req.first_token - req.arrival)
        if req.done_at is not None:
            self.e2e.observe(req.done_at - req.arrival)
            if req.generated > 1:
                self.tpot.observe((req.done_at - req.first_token) / (req.generated - 1))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
