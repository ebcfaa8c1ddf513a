"""Text-side generation logic with a fake tokenizer (no torch): stop strings, streaming hold-back, end ids."""

from __future__ import annotations

import json

from runtime.generate import _TextStreamer, complete, end_ids
from runtime.runners.base import Sampling, TokenOutput


class CharTok:
    """One token per character; id 0 is EOS."""

    eos_token_id = 0
    pad_token_id = None
    chat_template = None
    name_or_path = ""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if i != 0)


class FakeRunner:
    backend, rank, world_size, is_leader = "fake", 0, 1, True

    def __init__(self, reply: str, eos: bool = False):
        self.reply, self.eos, self.seen = reply, eos, None

    def generate(self, batch, sampling: Sampling, stream=None):
        self.seen = sampling
        ids = [ord(c) for c in self.reply] + ([0] if self.eos else [])
        ids = ids[: sampling.max_new_tokens]
        for t in ids:
            if stream:
                stream(0, [t])
        return [TokenOutput(ids, "eos" if self.eos else "length")]

    def close(self):
        pass


def test_stop_string_cuts_text_and_stream_never_leaks_it():
    got = []
    out = complete(FakeRunner("Hello world. Bye"), CharTok(), ["x"], stop=["d. B"], stream=lambda i, d: got.append(d))
    assert out[0].text == "Hello worl" and out[0].finish_reason == "stop"
    assert "".join(got) == "Hello worl"


def test_eos_is_not_in_the_text():
    out = complete(FakeRunner("Hi", eos=True), CharTok(), ["x"])
    assert out[0].text == "Hi" and out[0].finish_reason == "eos"


def test_single_token_stop_strings_reach_the_runner():
    r = FakeRunner("abc")
    complete(r, CharTok(), ["x"], stop=["b", "zz"])
    assert (ord("b"),) in r.seen.stop_token_ids and (ord("z"), ord("z")) in r.seen.stop_token_ids


def test_end_ids_prefer_generation_config(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    assert end_ids(CharTok(), tmp_path) == [2, 7, 0]
    assert end_ids(CharTok(), tmp_path / "none") == [0]


def test_streamer_holds_back_a_possible_stop_prefix():
    got = []
    s = _TextStreamer(CharTok(), 1, ["END"], lambda i, d: got.append(d))
    for ch in "abEN":
        s.on_tokens(0, [ord(ch)])
    assert "".join(got) == "ab"  # "EN" could still become "END"
    s.on_tokens(0, [ord("X")])
    assert "".join(got) == "abE"
