"""TP/PP checkpoints under mpirun: each rank loads its own shard and the result equals the TP=1 checkpoint's."""

from __future__ import annotations

import shutil

import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.mpi]


def _run(mpirun, n, ckpt, out):
    p = mpirun(n, "tests/integration/_mpi_logits.py", str(ckpt), str(out))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return torch.load(out)


@pytest.mark.parametrize(
    ("arch", "fmt", "tp", "pp"),
    [("llama", "int4_awq", 2, 1), ("llama", "int8_sq", 1, 2), ("gpt2", "fp16", 2, 1)],
    ids=["llama-int4_awq-tp2", "llama-int8_sq-pp2", "gpt2-fp16-tp2"],
)
def test_split_matches_tp1(arch, fmt, tp, pp, checkpoints, mpirun, tmp_path):
    from runtime.reference.runner import ReferenceRunner
    from runtime.runners.base import Sampling
    from tests.integration.conftest import SEQS

    one, _ = checkpoints(arch, fmt)
    split, _ = checkpoints(arch, fmt, tp=tp, pp=pp)
    r1 = ReferenceRunner.open(one)
    want_logits = r1.logits(SEQS)
    want_tokens = [o.token_ids for o in r1.generate(SEQS, Sampling(max_new_tokens=8))]
    got = _run(mpirun, tp * pp, split, tmp_path / "out.pt")
    for a, b in zip(got["logits"], want_logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)  # floating-point tolerance only
    assert got["tokens"] == want_tokens


def test_wrong_world_size_fails_at_once(checkpoints, mpirun):
    split, _ = checkpoints("llama", "int8_sq", tp=2)
    p = mpirun(3, "-m", "builder.cli", "run", str(split), "hello", timeout=60)
    assert p.returncode != 0
    assert "needs exactly 2 ranks" in p.stderr and "mpirun -n 2" in p.stderr


def test_verify_detects_a_wrongly_split_checkpoint(checkpoints, mpirun, tmp_path):
    """Rank files swapped (each shard is valid, the split is wrong): verify against the TP=1 baseline fails."""
    one, _ = checkpoints("llama", "int8_sq")
    split, _ = checkpoints("llama", "int8_sq", tp=2)
    good = mpirun(2, "-m", "builder.cli", "verify", str(split), "--baseline", str(one), "--json")
    assert good.returncode == 0, good.stderr[-3000:]
    assert '"passed": true' in good.stdout
    bad = tmp_path / "swapped"
    shutil.copytree(split, bad)
    (bad / "rank0.safetensors").rename(bad / "tmp")
    (bad / "rank1.safetensors").rename(bad / "rank0.safetensors")
    (bad / "tmp").rename(bad / "rank1.safetensors")
    p = mpirun(2, "-m", "builder.cli", "verify", str(bad), "--baseline", str(one))
    assert p.returncode == 1, p.stdout + p.stderr[-2000:]
    assert "verification FAILED" in p.stdout and "baseline.nrmse" in p.stdout
