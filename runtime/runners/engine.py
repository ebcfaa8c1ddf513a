"""The TensorRT engine backend: a thin wrapper around tensorrt_llm.runtime.ModelRunnerCpp (ModelRunner as fallback).

Launch: `mpirun -n <tp*pp> trtq run ARTIFACT ...`; every rank opens the runner with its MPI rank and calls generate;
only rank 0 gets outputs (ModelRunnerCpp returns [] elsewhere), as in TensorRT-LLM's examples/run.py.

`generate` asks for `return_dict=True, output_sequence_lengths=True` and decodes the way run.py does:
output_ids[b][beam] holds the prompt, then the generated tokens, right-padded with end_id, and
sequence_lengths[b][beam] counts prompt + generated, so the answer is output_ids[b][0][len(prompt):sequence_lengths[b][0]].
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.runners._trtllm import (
    RunnerError,
    check_world,
    decode,
    end_id_of,
    holdback,
    layout,
    mapping_layout,
    optional_manifest,
    require_trtllm,
)
from runtime.runners.base import Sampling, StreamCallback, TokenOutput

log = logging.getLogger("trtq.run")


class EngineRunner:
    backend = "engine"

    def __init__(self, runner: Any, engine_dir: Path, build_config: dict[str, Any], rank: int, world_size: int,
                 default_end_id: int | None, kind: str):  # fmt: skip
        self._runner = runner
        self.engine_dir = engine_dir
        self.build_config = build_config
        self.rank = rank
        self.world_size = world_size
        self.default_end_id = default_end_id
        self.kind = kind  # "ModelRunnerCpp" or "ModelRunner"

    @classmethod
    def open(cls, artifact_dir: Path, rank: int, world_size: int) -> EngineRunner:
        """Open the engines of ``artifact_dir`` (its engine/, or the directory itself when it holds config.json +
        rank0.engine) for this MPI rank. The layout comes from the engines' own config.json, so no manifest is needed
        (a build's verify stage runs before the manifest exists); when the artifact has one, it must agree. The world
        size is checked before anything is loaded."""
        from runtime.select import engine_dir as find_engine_dir

        artifact_dir = Path(artifact_dir)
        engine_dir = find_engine_dir(artifact_dir) or artifact_dir / "engine"
        config_path = engine_dir / "config.json"
        if not config_path.is_file():
            raise RunnerError(
                f"{artifact_dir}: no engines (engine/config.json missing): add `engine` to the recipe's targets and "
                "build inside the TensorRT-LLM container"
            )
        config = json.loads(config_path.read_text())
        tp, pp, n = mapping_layout(config)
        manifest = optional_manifest(artifact_dir)
        if manifest is not None and layout(manifest)[2] != n:
            raise RunnerError(f"{config_path}: engines for {n} ranks, manifest says {layout(manifest)[2]}: rebuild")
        check_world(tp, pp, n, artifact_dir, world_size)
        if not (engine_dir / f"rank{rank}.engine").is_file():
            raise RunnerError(f"{engine_dir}: rank{rank}.engine is missing: rebuild the engines")
        build_config = config.get("build_config") or {}
        trtllm = require_trtllm("Running TensorRT engines")
        import tensorrt_llm.runtime as trt_runtime

        if getattr(trt_runtime, "PYTHON_BINDINGS", False) and _inflight_batching(build_config):
            runner = trt_runtime.ModelRunnerCpp.from_dir(str(engine_dir), rank=rank)
            kind = "ModelRunnerCpp"
        else:
            log.info("ModelRunner (Python session): the engine or this install lacks in-flight batching support")
            runner = trt_runtime.ModelRunner.from_dir(str(engine_dir), rank=rank)
            kind = "ModelRunner"
        log.debug("tensorrt_llm %s, %s, rank %d/%d", trtllm.__version__, kind, rank, world_size)
        return cls(runner, engine_dir, build_config, rank, world_size, end_id_of(engine_dir), kind)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def _check(self, batch: Sequence[Sequence[int]], sampling: Sampling) -> None:
        bc = self.build_config
        max_in, max_seq = bc.get("max_input_len"), bc.get("max_seq_len")
        for i, prompt in enumerate(batch):
            if max_in and len(prompt) > max_in:
                raise RunnerError(f"prompt {i} has {len(prompt)} tokens; the engine's max_input_len is {max_in}")
            if max_seq and len(prompt) + sampling.max_new_tokens > max_seq:
                raise RunnerError(
                    f"prompt {i} ({len(prompt)} tokens) + max_new_tokens {sampling.max_new_tokens} exceeds the "
                    f"engine's max_seq_len {max_seq}: lower --max-new-tokens"
                )

    def generate(self, batch: Sequence[Sequence[int]], sampling: Sampling, stream: StreamCallback | None = None
                 ) -> list[TokenOutput]:  # fmt: skip
        """All ranks call this with the same batch; rank 0 returns one TokenOutput per prompt, the others []."""
        self._check(batch, sampling)
        step = int(self.build_config.get("max_batch_size") or len(batch)) or 1
        results: list[TokenOutput] = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            shifted = None if stream is None else (lambda i, toks, s=start: stream(i + s, toks))
            results += self._generate(chunk, sampling, shifted)
        return results if self.is_leader else []

    def _generate(self, batch, sampling: Sampling, stream) -> list[TokenOutput]:
        import torch

        end_id = sampling.end_id if sampling.end_id is not None else self.default_end_id
        if end_id is None:
            raise RunnerError(f"{self.engine_dir}: no end-of-sequence id (Sampling.end_id, generation_config.json)")
        pad_id = sampling.pad_id if sampling.pad_id is not None else end_id
        ids = [torch.tensor(list(p), dtype=torch.int32) for p in batch]
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "end_id": end_id,
            "pad_id": pad_id,
            "streaming": stream is not None,
            "return_dict": True,
            "output_sequence_lengths": True,
        }
        if sampling.temperature == 0:  # greedy, as examples/run.py's defaults
            kwargs.update(top_k=1, top_p=0.0, temperature=1.0)
        else:
            kwargs.update(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                          random_seed=sampling.seed)  # fmt: skip
        out = self._runner.generate(ids, **kwargs)
        if not self.is_leader or (isinstance(out, list) and not out):
            if stream is not None and not isinstance(out, list):
                for _ in out:  # non-leaders of ModelRunner still step through the stream
                    pass
            return []
        lengths = [len(p) for p in batch]
        if stream is None:
            return [self._decode(out, b, lengths[b], end_id, sampling) for b in range(len(batch))]
        return self._stream(out, batch, lengths, end_id, sampling, stream)

    def _decode(self, out, b: int, prompt_len: int, end_id: int, sampling: Sampling, final: bool = True) -> TokenOutput:
        ids = out["output_ids"][b][0].tolist()
        seq_len = int(out["sequence_lengths"][b][0])
        return decode(ids[prompt_len:seq_len], end_id, sampling.max_new_tokens, sampling.stop_token_ids, final)

    def _stream(self, steps, batch, lengths, end_id, sampling: Sampling, stream) -> list[TokenOutput]:
        sent = [0] * len(batch)
        keep = holdback(sampling.stop_token_ids)
        last = None
        for out in steps:
            last = out
            for b in range(len(batch)):
                now = self._decode(out, b, lengths[b], end_id, sampling, final=False)
                upto = len(now.token_ids) if now.finish_reason in ("eos", "stop") else len(now.token_ids) - keep
                if upto > sent[b]:
                    stream(b, now.token_ids[sent[b] : upto])
                    sent[b] = upto
        if last is None:
            return [TokenOutput([], "length") for _ in batch]
        final = [self._decode(last, b, lengths[b], end_id, sampling) for b in range(len(batch))]
        for b, res in enumerate(final):
            if len(res.token_ids) > sent[b]:
                stream(b, res.token_ids[sent[b] :])
        return final

    def close(self) -> None:
        self._runner = None


def _inflight_batching(build_config: dict[str, Any]) -> bool:
    """ModelRunnerCpp needs the attention plugin, packed inputs and a paged KV cache (examples/run.py's check)."""
    plugin = build_config.get("plugin_config") or {}
    kv = str(build_config.get("kv_cache_type") or "PAGED").upper()
    return (
        bool(plugin.get("gpt_attention_plugin", "auto"))
        and bool(plugin.get("remove_input_padding", True))
        and (kv.endswith("PAGED"))
    )
