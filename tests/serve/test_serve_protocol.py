"""Request validation and streaming text, without a model: what becomes a 400 (naming the field), and how token
deltas become text (stop strings held back and cut, half characters never sent)."""

from __future__ import annotations

import pytest

pytest.importorskip("pydantic")

from runtime.serve.protocol import ApiError, ChatRequest, CompletionRequest, parse  # noqa: E402
from runtime.serve.text import TextStream  # noqa: E402


@pytest.mark.parametrize(
    "body,param,words",
    [
        ({"model": "m", "prompt": "x", "max_tokens": -1}, "max_tokens", "greater than or equal to 1"),
        ({"model": "m", "prompt": "x", "temperature": 3}, "temperature", "less than or equal to 2"),
        ({"model": "m", "prompt": "x", "n": 2}, "n", "n=1"),
        ({"model": "m", "prompt": "x", "logprobs": 2}, "logprobs", "not supported"),
        ({"model": "m", "prompt": "x", "presence_penalty": 0.5}, "presence_penalty", "not supported"),
        ({"model": "m", "prompt": "x", "stop": [""]}, "stop", "non-empty"),
        ({"prompt": "x"}, "model", "required"),
        ({"model": "m", "messages": []}, "messages", "at least 1"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages", "system"),
    ],
)
def test_bad_fields_are_400s_that_name_the_field(body, param, words):
    model = ChatRequest if "messages" in body else CompletionRequest
    with pytest.raises(ApiError) as e:
        parse(model, body)
    assert e.value.status == 400 and e.value.param == param and words in e.value.message
    assert e.value.body()["error"]["type"] == "invalid_request_error"


def test_defaults_and_extensions():
    c = parse(
        CompletionRequest,
        {
            "model": "m",
            "prompt": [1, 2, 3],
            "stop": "\n",
            "top_k": -1,
            "ignore_eos": True,
            "user": "someone",
            "stream_options": {"include_usage": True},
        },
    )
    assert c.max_tokens == 16 and c.temperature == 1.0 and c.stops == ["\n"] and c.ignore_eos and c.include_usage
    chat = parse(
        ChatRequest,
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "max_completion_tokens": 7,
        },
    )
    assert chat.messages[0].text() == "ab" and chat.limit == 7
    with pytest.raises(ApiError):
        parse(ChatRequest, ["not", "an", "object"])


class _CharTokenizer:
    """One token per byte, decoded as UTF-8 with replacement (a multi-byte character spans tokens)."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def test_text_stream_holds_back_stop_strings_and_half_characters():
    ts = TextStream(_CharTokenizer(), stops=["END"])
    sent = "".join(ts.push(b) for b in b"hi ")
    assert sent == "h"  # "i " could still start "END"
    sent += "".join(ts.push(b) for b in "é".encode())  # two bytes: nothing half-made is sent
    assert "\ufffd" not in sent
    sent += "".join(ts.push(b) for b in b"xxENDyy")
    assert ts.stopped and sent + ts.finish() == "hi éxx"


def test_text_stream_without_stops_flushes_at_finish():
    ts = TextStream(_CharTokenizer())
    out = "".join(ts.push(b) for b in b"abc") + ts.finish()
    assert out == "abc"


def test_null_fields_take_their_defaults():
    c = parse(CompletionRequest, {"model": "m", "prompt": "x", "temperature": None, "max_tokens": None, "stop": None})
    assert c.temperature == 1.0 and c.max_tokens == 16 and c.stops == []
