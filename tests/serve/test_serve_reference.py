"""`trtq serve` on the CPU reference runtime, through the official `openai` client and raw HTTP.

The server runs as a subprocess on a free loopback port (tests/serve/conftest.py). Nothing here asserts a timing.
"""

from __future__ import annotations

import json
import threading

import pytest

from tests.serve.conftest import start_server

pytestmark = pytest.mark.integration

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def server(tiny_checkpoints, tmp_path_factory):
    s = start_server(tiny_checkpoints[1], tmp_path_factory.mktemp("srv"))
    yield s
    assert s.terminate() == 0, s.output()[-2000:]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(server):
    return server.record()["model"]


def test_models_and_a_chat_completion(client, model, server):
    assert [m.id for m in client.models.list().data] == [model]
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Paris is"}], max_tokens=6, temperature=0
    )
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content is not None
    assert choice.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 6 and r.usage.prompt_tokens > 3  # the chat template added its tokens
    rec = server.record()
    assert rec["server"] == "reference" and rec["reason"] and rec["url"] == server.base


def test_greedy_completion_equals_the_reference_runner(client, model, tiny_checkpoints):
    """The served tokens are the reference runtime's own: same prompt ids, greedy, no EOS stop."""
    from runtime.reference.runner import ReferenceRunner
    from runtime.runners.base import Sampling

    prompt = [5, 6, 7, 8, 9, 10, 11]
    want = ReferenceRunner.open(tiny_checkpoints[1]).generate([prompt], Sampling(max_new_tokens=10, end_id=-1))
    from runtime.generate import load_tokenizer

    tok = load_tokenizer(tiny_checkpoints[1])
    r = client.completions.create(
        model=model, prompt=prompt, max_tokens=10, temperature=0, extra_body={"ignore_eos": True}
    )
    assert r.choices[0].text == tok.decode(want[0].token_ids, skip_special_tokens=True)
    assert r.usage.completion_tokens == 10 and r.choices[0].finish_reason == "length"


def test_a_stream_streams_the_same_text(client, model):
    kw = dict(model=model, prompt="The quick brown", max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
    whole = client.completions.create(**kw).choices[0].text
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len([t for t in texts if t]) > 1  # it arrived in pieces
    assert "".join(texts) == whole
    assert chunks[-1].usage.completion_tokens == 12
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    chat = list(
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5, temperature=0, stream=True
        )
    )
    assert chat[0].choices[0].delta.role == "assistant" and chat[-1].choices[0].finish_reason in ("stop", "length")


def test_stop_strings_cut_the_text(client, model):
    kw = dict(model=model, prompt="The quick brown", max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    free = client.completions.create(**kw).choices[0].text
    stop = free[4:7]
    cut = client.completions.create(stop=[stop], **kw).choices[0]
    assert cut.text == free[: free.find(stop)] and cut.finish_reason == "stop"


def test_16_concurrent_streams_complete(client, model):
    """16 streams at once (the batch holds them all): no error, each gets every token it asked for, and greedy
    outputs match the same prompts sent one at a time (a sequence's tokens do not depend on its batch)."""
    prompts = [f"The quick brown fox {i}" for i in range(16)]
    kw = dict(model=model, max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
    alone = [client.completions.create(prompt=p, **kw).choices[0].text for p in prompts[:4]]
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        try:
            parts = [
                c.choices[0].text for c in client.completions.create(prompt=prompts[i], stream=True, **kw) if c.choices
            ]
            results[i] = "".join(parts)
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert sorted(results) == list(range(16))
    assert [results[i] for i in range(4)] == alone


def test_bad_requests_get_clear_4xx_and_the_server_keeps_serving(client, model, server):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "does not exist" in str(e.value) and model in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model, prompt="hi", max_tokens=-3)
    assert "max_tokens" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model, prompt="hello " * 2000, max_tokens=4)
    assert e.value.code == "context_length_exceeded" and "context" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], n=2)
    assert "n=1" in str(e.value)
    bad_json = httpx.post(
        server.base + "/completions",
        content=b'{"model": "x", "prompt": ',
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    big = json.dumps({"model": model, "prompt": "x" * (10 * 2**20)}).encode()
    too_big = httpx.post(
        server.base + "/completions", content=big, timeout=60, headers={"content-type": "application/json"}
    )
    assert too_big.status_code == 413 and "limit" in too_big.json()["error"]["message"]
    assert httpx.get(server.base + "/nope", timeout=10).status_code == 404
    # still serving
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert r.choices[0].message.content is not None
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert 'trtq_http_responses_total{route="/v1/completions",status="413"} 1.0' in metrics


def test_api_key_queue_bound_and_disconnect(tiny_checkpoints, serve):
    """One batch row and one waiting place: a third request gets 429; a client that disconnects frees its row."""
    s = serve(tiny_checkpoints[1], "--api-key", "sekrit", "--max-batch-size", "1", "--max-queue", "1")
    model = s.record()["model"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=s.base, api_key="wrong", max_retries=0).models.list()
    assert httpx.get(s.url + "/health", timeout=10).status_code == 200  # health needs no key
    c = openai.OpenAI(base_url=s.base, api_key="sekrit", max_retries=0, timeout=120)
    long = dict(model=model, prompt="The quick brown", max_tokens=400, temperature=0, extra_body={"ignore_eos": True})
    first = c.completions.create(stream=True, **long)  # holds the only row
    next(iter(first))
    second = c.completions.create(stream=True, **long)  # waits in the queue
    with pytest.raises(openai.RateLimitError) as e:
        c.completions.create(**{**long, "max_tokens": 2})
    assert "too many requests" in str(e.value)
    first.close()  # disconnect: frees the row for the waiting one
    got = [ch.choices[0].text for ch in second if ch.choices]
    assert len("".join(got)) > 0
    metrics = httpx.get(s.url + "/metrics", timeout=10).text
    assert 'trtq_requests_total{reason="cancelled"} 1.0' in metrics
    assert "trtq_requests_running 0.0" in metrics


def test_sigterm_drains_the_requests_in_flight(tiny_checkpoints, serve):
    s = serve(tiny_checkpoints[1])
    model = s.record()["model"]
    c = openai.OpenAI(base_url=s.base, api_key="x", max_retries=0, timeout=120)
    stream = c.completions.create(
        model=model,
        prompt="The quick brown",
        max_tokens=60,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    it = iter(stream)
    next(it)
    import os
    import signal

    os.kill(s.rank0_pid, signal.SIGTERM)
    rest = list(it)
    assert rest[-1].usage.completion_tokens == 60  # finished in full after the signal
    assert s.proc.wait(60) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.url + "/health", timeout=5)
    assert "stopped after" in s.output()


def test_bounded_load_through_trtq_bench_url_and_the_report_plot(server, tmp_path):
    """`trtq bench --url` at 1, 4 and 16 concurrent streams (16 requests per level, 60 s cap, loopback); prints
    throughput and latency percentiles; `trtq report` plots them. No timing is asserted."""
    from tests._cli import run_trtq

    art = tmp_path / "art"
    art.mkdir()
    (art / "manifest.json").write_text(
        json.dumps(
            {
                "schema_version": 1,
                "name": "tiny",
                "status": "complete",
                "created": "2026-01-01T00:00:00Z",
                "trtq_version": "0.2.0",
                "recipe": {"quantization": {"format": "fp16"}},
                "parallel": {"tp": 1, "pp": 1},
            }
        )
    )
    p = run_trtq(
        "bench",
        art,
        "--url",
        server.url,
        "--concurrency",
        "1,4,16",
        "--requests",
        "16",
        "--output-len",
        "8",
        "--max-seconds",
        "60",
        "--save",
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    print(p.stdout)
    lines = p.stdout.splitlines()
    assert lines[1].startswith("concurrency") and len(lines) == 5
    (saved,) = (art / "bench").glob("endpoint-*.json")
    rec = json.loads(saved.read_text())
    assert [lv["concurrency"] for lv in rec["levels"]] == [1, 4, 16]
    assert all(lv["errors"] == 0 and lv["output_tokens"] == 8 * lv["requests"] for lv in rec["levels"])
    assert all(lv["ttft_s"]["p50"] <= lv["ttft_s"]["p99"] for lv in rec["levels"])
    pytest.importorskip("matplotlib")
    r = run_trtq("report", art, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (art / "report" / "serving.png").stat().st_size > 10_000
    assert "## Serving under load" in (art / "report" / "report.md").read_text()


def test_a_port_in_use_is_one_line_and_exit_2(server, tiny_checkpoints):
    from tests._cli import run_trtq

    port = server.url.rsplit(":", 1)[1]
    p = run_trtq("serve", tiny_checkpoints[1], "--port", port, timeout=120)
    assert p.returncode == 2 and "cannot listen there" in p.stderr and "Traceback" not in p.stderr
