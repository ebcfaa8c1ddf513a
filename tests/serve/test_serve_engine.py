"""Continuous batching over the reference runtime (runtime/serve/engine.py), in process.

Sequences that join and leave the batch at different steps, each at its own position, must produce exactly the
tokens ReferenceRunner.generate produces for them alone, for every cache kind (plain, quantized KV) and position
scheme (RoPE, GPT-2's learned table); sampling is seeded per sequence, so it does not depend on the batch either.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [20, 21, 22], [300, 301, 302, 303, 304, 305], [40, 41]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    pytest.importorskip("modelopt.torch.quantization")
    from tests._build import build_artifact
    from tests._tiny import make_model

    base = tmp_path_factory.mktemp("engine")
    made = {}

    def make(arch: str, kv: str = "none"):
        if (arch, kv) not in made:
            hf = make_model(base / arch, arch) if not (base / arch).exists() else base / arch
            made[arch, kv] = build_artifact(hf, base / "engines", f"{arch}-{kv}", "fp16", kv) / "checkpoint"
        return made[arch, kv]

    return make


def _alone(runner, prompt, n, **sampling):
    from runtime.runners.base import Sampling

    return runner.generate([prompt], Sampling(max_new_tokens=n, end_id=-1, **sampling))[0].token_ids


def _staggered(engine, prompts, n, admit_kw=None):
    """Admit one prompt per iteration, decode every iteration, retire each sequence after n tokens."""
    from runtime.serve.engine import Admit, Plan, remove_row

    out: dict[int, list[int]] = {}
    rows: list[int] = []  # prompt index per engine row
    waiting = list(range(len(prompts)))
    while waiting or rows:
        free = tuple(i for i, p in enumerate(rows) if len(out[p]) >= n)
        for i in sorted(free, reverse=True):
            remove_row(rows, i)
        admit = ()
        if waiting and len(rows) < engine.max_rows:
            p = waiting.pop(0)
            admit = (Admit(tuple(prompts[p]), **(admit_kw or {}).get(p, {})),)
            out[p] = []
        res = engine.apply(Plan(free=free, admit=admit, decode=bool(rows) or bool(admit)))
        if admit:
            rows.append(p)
            out[p].append(res.first[0])
        for p, tok in zip(rows, res.decoded, strict=True):
            if len(out[p]) < n:
                out[p].append(tok)
    return out


@pytest.mark.parametrize("arch,kv", [("llama", "none"), ("llama", "int8"), ("gpt2", "none")])
def test_staggered_batch_equals_each_sequence_alone(checkpoint, arch, kv):
    from runtime.reference.runner import ReferenceRunner
    from runtime.serve.engine import BatchEngine

    runner = ReferenceRunner.open(checkpoint(arch, kv))
    engine = BatchEngine(runner, max_rows=3, max_len=64)
    got = _staggered(engine, PROMPTS, 7)
    assert engine.running == 0
    for i, p in enumerate(PROMPTS):
        assert got[i] == _alone(runner, p, 7), f"prompt {i}"


def test_seeded_sampling_does_not_depend_on_the_batch(checkpoint):
    from runtime.reference.runner import ReferenceRunner
    from runtime.serve.engine import BatchEngine

    runner = ReferenceRunner.open(checkpoint("llama"))
    kw = {i: dict(temperature=1.0, top_k=50, top_p=0.9, seed=100 + i) for i in range(len(PROMPTS))}
    together = _staggered(BatchEngine(runner, 4, 64), PROMPTS, 8, kw)
    alone = {i: _staggered(BatchEngine(runner, 1, 64), [p], 8, {0: kw[i]})[0] for i, p in enumerate(PROMPTS)}
    assert together == alone
    greedy = _staggered(BatchEngine(runner, 4, 64), PROMPTS, 8)
    assert together != greedy  # it did sample


def test_the_cache_grows_and_compacts(checkpoint):
    from runtime.reference.runner import ReferenceRunner
    from runtime.serve.engine import Admit, BatchEngine, Plan

    runner = ReferenceRunner.open(checkpoint("llama"))
    engine = BatchEngine(runner, max_rows=8, max_len=300)
    long = list(range(5, 5 + 280))
    first = engine.apply(Plan(admit=tuple(Admit(tuple(p)) for p in [long, *PROMPTS]), decode=True))
    assert engine.running == 5 and engine.cache.rows >= 5 and engine.cache.length >= 281
    engine.apply(Plan(free=(0, 2)))  # descending: row 4 moves into 2, then row 3 into 0
    assert engine.running == 3 and engine.lengths == [len(PROMPTS[2]) + 1, len(PROMPTS[0]) + 1, len(PROMPTS[3]) + 1]
    assert engine.pending == [first.decoded[3], first.decoded[1], first.decoded[4]]
