"""EngineRunner and PyTorchRunner against the strict stand-in: world size, rank mapping, decoding, streaming."""

from __future__ import annotations

import pytest
from contract.fakes import fake_checkpoint, write_manifest

pytest.importorskip("torch", reason="the TensorRT-LLM runners hand token ids over as torch tensors")

from builder.recipe.schema import Recipe  # noqa: E402
from runtime.runners._trtllm import RunnerError, WorldSizeError  # noqa: E402
from runtime.runners.base import Sampling  # noqa: E402

END = 2


def engine_artifact(tmp_path, standin, tp=1, pp=1, **engine):
    """An artifact with a manifest and engines built by trtq's engine stage (through the stand-in)."""
    from builder.stages.build import build_engines

    art = tmp_path / "art"
    ckpt = fake_checkpoint(art / "checkpoint", tp=tp, pp=pp)
    r = Recipe.model_validate({"name": "tiny", "model": {"path": "x"}, "parallel": {"tp": tp, "pp": pp},
                               "engine": {"max_batch_size": 4, "max_input_len": 64, "max_seq_len": 128, **engine}})  # fmt: skip
    build_engines(r, ckpt, art / "engine")
    write_manifest(art, tp, pp)
    standin.calls.clear()
    return art


def expected(standin, prompt, n):
    toks, _ = standin.continue_(prompt, n, END)
    return toks


# ---------------------------------------------------------------------------------------------- engines
def test_rank0_decodes_prompt_stripped_outputs(standin, tmp_path):
    from runtime.runners.engine import EngineRunner

    art = engine_artifact(tmp_path, standin)
    runner = EngineRunner.open(art, rank=0, world_size=1)
    batch = [[5, 6, 7], [9]]
    outs = runner.generate(batch, Sampling(max_new_tokens=5, end_id=END))
    assert [o.token_ids for o in outs] == [expected(standin, p, 5) for p in batch]
    assert [o.finish_reason for o in outs] == ["length", "length"]
    (call,) = standin.called("tensorrt_llm.runtime.ModelRunnerCpp.generate")
    assert call["return_dict"] and call["output_sequence_lengths"] and call["end_id"] == END
    assert (call["top_k"], call["top_p"], call["temperature"]) == (1, 0.0, 1.0)  # greedy, as run.py
    assert [t.tolist() for t in call["batch_input_ids"]] == batch
    (opened,) = standin.called("tensorrt_llm.runtime.ModelRunnerCpp.from_dir")
    assert opened["engine_dir"] == str(art / "engine") and opened["rank"] == 0
    assert runner.kind == "ModelRunnerCpp"


@pytest.mark.parametrize("end_counts", [True, False])
def test_end_id_ends_the_sequence_whichever_way_lengths_count_it(standin, tmp_path, end_counts):
    from runtime.runners.engine import EngineRunner

    standin.end_after, standin.end_counts_in_length = 3, end_counts
    runner = EngineRunner.open(engine_artifact(tmp_path, standin), rank=0, world_size=1)
    (out,) = runner.generate([[5, 6]], Sampling(max_new_tokens=10, end_id=END))
    assert out.token_ids == expected(standin, [5, 6], 3) and out.finish_reason == "eos"


def test_eos_id_defaults_from_generation_config(standin, tmp_path):
    from runtime.runners.engine import EngineRunner

    runner = EngineRunner.open(engine_artifact(tmp_path, standin), rank=0, world_size=1)
    runner.generate([[5]], Sampling(max_new_tokens=2))
    assert standin.called("tensorrt_llm.runtime.ModelRunnerCpp.generate")[0]["end_id"] == END


def test_non_leader_ranks_get_nothing(standin, tmp_path):
    from runtime.runners.engine import EngineRunner

    art = engine_artifact(tmp_path, standin, tp=2)
    standin.rank, standin.world_size = 1, 2
    runner = EngineRunner.open(art, rank=1, world_size=2)
    assert not runner.is_leader
    assert runner.generate([[5, 6]], Sampling(max_new_tokens=3, end_id=END)) == []
    assert standin.called("tensorrt_llm.runtime.ModelRunnerCpp.from_dir")[0]["rank"] == 1


def test_world_size_is_checked_before_loading(standin, tmp_path):
    from runtime.runners.engine import EngineRunner

    art = engine_artifact(tmp_path, standin, tp=2)
    with pytest.raises(WorldSizeError, match=r"tp=2 x pp=1 = 2 rank\(s\), but this run has 1: run `mpirun -n 2"):
        EngineRunner.open(art, rank=0, world_size=1)
    assert standin.calls == []  # nothing was loaded


def test_stop_sequences_and_streaming(standin, tmp_path):
    from runtime.runners.engine import EngineRunner

    runner = EngineRunner.open(engine_artifact(tmp_path, standin), rank=0, world_size=1)
    full = expected(standin, [5], 8)
    stop = tuple(full[3:5])
    sampling = Sampling(max_new_tokens=8, end_id=END, stop_token_ids=(stop,))
    (plain,) = runner.generate([[5]], sampling)
    assert plain.token_ids == full[:3] and plain.finish_reason == "stop"
    pieces: list[tuple[int, list[int]]] = []
    (streamed,) = runner.generate([[5]], sampling, stream=lambda i, toks: pieces.append((i, list(toks))))
    assert streamed.token_ids == plain.token_ids
    assert [t for _, toks in pieces for t in toks] == plain.token_ids and len(pieces) > 1
    assert standin.called("tensorrt_llm.runtime.ModelRunnerCpp.generate")[-1]["streaming"] is True


def test_batches_larger_than_the_engine_are_split_and_limits_checked(standin, tmp_path):
    from runtime.runners.engine import EngineRunner

    runner = EngineRunner.open(engine_artifact(tmp_path, standin), rank=0, world_size=1)
    batch = [[i + 3] for i in range(6)]  # engine max_batch_size 4
    outs = runner.generate(batch, Sampling(max_new_tokens=2, end_id=END))
    assert [o.token_ids for o in outs] == [expected(standin, p, 2) for p in batch]
    assert len(standin.called("tensorrt_llm.runtime.ModelRunnerCpp.generate")) == 2
    with pytest.raises(RunnerError, match="max_seq_len 128"):
        runner.generate([[1] * 60], Sampling(max_new_tokens=100, end_id=END))
    with pytest.raises(RunnerError, match="max_input_len is 64"):
        runner.generate([[1] * 65], Sampling(max_new_tokens=1, end_id=END))


def test_python_session_fallback(standin, tmp_path):
    import tensorrt_llm.runtime as rt

    from runtime.runners.engine import EngineRunner

    art = engine_artifact(tmp_path, standin)
    rt.PYTHON_BINDINGS = False
    runner = EngineRunner.open(art, rank=0, world_size=1)
    assert runner.kind == "ModelRunner"
    (out,) = runner.generate([[4, 4]], Sampling(max_new_tokens=4, end_id=END, temperature=0.7, top_k=5, seed=3))
    assert out.token_ids == expected(standin, [4, 4], 4)
    (call,) = standin.called("tensorrt_llm.runtime.ModelRunner.generate")
    assert (call["temperature"], call["top_k"], call["random_seed"]) == (0.7, 5, 3)


def test_missing_engines_and_missing_tensorrt_llm(tmp_path, monkeypatch):
    import sys

    from runtime.runners.engine import EngineRunner

    write_manifest(tmp_path / "a", 1, 1)
    with pytest.raises(RunnerError, match="no engines"):
        EngineRunner.open(tmp_path / "a", rank=0, world_size=1)
    eng = tmp_path / "a" / "engine"
    eng.mkdir()
    (eng / "config.json").write_text('{"pretrained_config": {"mapping": {"world_size": 1}}}')
    (eng / "rank0.engine").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # import fails as if not installed
    with pytest.raises(RunnerError, match=r"needs tensorrt_llm.*release:1.2.1"):
        EngineRunner.open(tmp_path / "a", rank=0, world_size=1)


# ---------------------------------------------------------------------------------------------- PyTorch backend
def hf_artifact(tmp_path, tp=1, pp=1):
    art = tmp_path / "art"
    (art / "hf").mkdir(parents=True)
    (art / "hf" / "config.json").write_text('{"eos_token_id": 2, "architectures": ["LlamaForCausalLM"]}')
    write_manifest(art, tp, pp)
    return art


def test_pytorch_backend_takes_tp_pp_from_the_manifest(standin, tmp_path):
    from runtime.runners.pytorch import PyTorchRunner

    runner = PyTorchRunner.open(hf_artifact(tmp_path, tp=2, pp=2), rank=0, world_size=1)
    (call,) = standin.called("tensorrt_llm.LLM")
    assert call["tensor_parallel_size"] == 2 and call["pipeline_parallel_size"] == 2
    assert call["model"] == str(tmp_path / "art" / "hf")
    batch = [[5, 6], [7]]
    outs = runner.generate(batch, Sampling(max_new_tokens=4))
    assert [o.token_ids for o in outs] == [expected(standin, p, 4) for p in batch]
    assert [o.finish_reason for o in outs] == ["length", "length"]
    (sp,) = standin.called("tensorrt_llm.SamplingParams")
    assert sp == {"max_tokens": 4, "detokenize": False, "end_id": END, "temperature": 0.0}
    runner.close()
    assert standin.called("tensorrt_llm.LLM.shutdown")


@pytest.mark.parametrize("end_kept", [False, True])
def test_pytorch_backend_eos_and_streaming(standin, tmp_path, end_kept):
    from runtime.runners.pytorch import PyTorchRunner

    standin.end_after, standin.end_in_llm_output = 3, end_kept
    runner = PyTorchRunner.open(hf_artifact(tmp_path), rank=0, world_size=1)
    (out,) = runner.generate([[5]], Sampling(max_new_tokens=9, temperature=0.8, top_k=4, seed=1))
    assert out.token_ids == expected(standin, [5], 3) and out.finish_reason == "eos"
    pieces = []
    (streamed,) = runner.generate([[5]], Sampling(max_new_tokens=9), stream=lambda i, t: pieces.append(list(t)))
    assert streamed.token_ids == out.token_ids and sum(pieces, []) == out.token_ids
    assert standin.called("tensorrt_llm.LLM.generate_async")[0]["streaming"] is True


def test_pytorch_backend_refuses_mpirun_ranks(standin, tmp_path):
    from runtime.runners.pytorch import PyTorchRunner

    art = hf_artifact(tmp_path, tp=2)
    with pytest.raises(WorldSizeError, match="starts its own 2 worker"):
        PyTorchRunner.open(art, rank=1, world_size=2)
    with pytest.raises(WorldSizeError):
        PyTorchRunner.open(art, rank=0, world_size=3)
    assert standin.called("tensorrt_llm.LLM") == []


# ---------------------------------------------------------------------------------------------- bench
def test_bench_drives_the_engine_runner_like_any_other(standin, tmp_path):
    """trtq bench's generic code on EngineRunner: a 1-token and a full generation per iteration, end id disabled."""
    from runtime.bench import Workload, bench
    from runtime.runners.engine import EngineRunner

    runner = EngineRunner.open(engine_artifact(tmp_path, standin), rank=0, world_size=1)
    out = bench(runner, 32, Workload(input_len=5, output_len=4, batch_size=2, iterations=2, warmup=1), avoid_ids=3)
    assert out["backend"] == "engine" and out["workload"]["batch_size"] == 2
    calls = standin.called("tensorrt_llm.runtime.ModelRunnerCpp.generate")
    assert [c["max_new_tokens"] for c in calls] == [1, 4] * 3  # warmup + 2 iterations
    assert {c["end_id"] for c in calls} == {-1}  # never generated: every sequence runs to output_len
    assert all(len(c["batch_input_ids"]) == 2 and len(c["batch_input_ids"][0]) == 5 for c in calls)
    assert out["tokens_per_s"]["mean"] > 0 and out["ttft_s"]["mean"] > 0


# ---------------------------------------------------------------------------------------------- automatic choice
def test_auto_picks_the_pytorch_backend_for_a_checkpoint_and_hf_export(standin, tmp_path):
    """checkpoint/ + hf/ on a machine with TensorRT-LLM and a GPU: TensorRT-LLM's PyTorch backend, not the CPU
    reference; without a manifest (a build's verify stage) tp/pp come from the checkpoint's mapping."""
    from runtime.runners.pytorch import PyTorchRunner
    from runtime.select import open_runner

    art = tmp_path / "art"
    fake_checkpoint(art / "checkpoint", tp=2, pp=1)
    (art / "hf").mkdir()
    (art / "hf" / "config.json").write_text('{"eos_token_id": 2, "architectures": ["LlamaForCausalLM"]}')
    runner = open_runner(art)
    assert isinstance(runner, PyTorchRunner)
    (call,) = standin.called("tensorrt_llm.LLM")
    assert call["tensor_parallel_size"] == 2 and "pipeline_parallel_size" not in call
    runner.close()


def test_auto_picks_the_engines_of_a_bare_engine_directory(standin, tmp_path):
    from runtime.runners.engine import EngineRunner
    from runtime.select import open_runner

    art = engine_artifact(tmp_path, standin)
    (art / "manifest.json").unlink()
    runner = open_runner(art / "engine")  # trtllm-build's output directory itself, no manifest anywhere
    assert isinstance(runner, EngineRunner) and runner.engine_dir == art / "engine"
    (out,) = runner.generate([[5, 6]], Sampling(max_new_tokens=3, end_id=END))
    assert out.token_ids == expected(standin, [5, 6], 3)


def test_engines_and_manifest_must_agree(standin, tmp_path):
    from runtime.runners.engine import EngineRunner

    art = engine_artifact(tmp_path, standin, tp=2)
    write_manifest(art, 1, 1)
    with pytest.raises(RunnerError, match="engines for 2 ranks, manifest says 1: rebuild"):
        EngineRunner.open(art, rank=0, world_size=2)
