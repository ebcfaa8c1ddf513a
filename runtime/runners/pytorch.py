"""The PyTorch backend: TensorRT-LLM's LLM API on the artifact's unified HF checkpoint (no engine build).

`tensorrt_llm.LLM(model, tensor_parallel_size=tp, pipeline_parallel_size=pp)` starts its own tp x pp worker processes
(an MPI pool), so this runner lives in ONE process: run `trtq run ARTIFACT` without mpirun. Under NVIDIA's
`trtllm-llmapi-launch` (which pre-spawns the workers and runs the script on rank 0 only) rank 0 opens it as usual.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.runners._trtllm import (
    RunnerError,
    WorldSizeError,
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


class PyTorchRunner:
    backend = "pytorch"

    def __init__(self, llm: Any, hf_dir: Path, rank: int, world_size: int, default_end_id: int | None):
        self._llm = llm
        self.hf_dir = hf_dir
        self.rank = rank
        self.world_size = world_size
        self.default_end_id = default_end_id

    @classmethod
    def open(cls, artifact_dir: Path, rank: int, world_size: int) -> PyTorchRunner:
        """Load the artifact's `hf/` checkpoint with the artifact's tp/pp (world size checked first): from the manifest,
        else (a build's verify stage, before the manifest exists) from the TensorRT-LLM checkpoint's mapping, else 1."""
        artifact_dir = Path(artifact_dir)
        tp, pp, n = _parallel(artifact_dir)
        if world_size not in (1, n) or rank != 0:
            raise WorldSizeError(
                f"{artifact_dir}: the PyTorch backend starts its own {n} worker process(es) (tp={tp} x pp={pp}): "
                f"run `trtq run {artifact_dir}` without mpirun (this is rank {rank} of {world_size})"
            )
        hf_dir = artifact_dir / "hf"
        if not (hf_dir / "config.json").is_file():
            raise RunnerError(f"{artifact_dir}: no unified HF checkpoint (hf/config.json): add `hf` to the targets")
        trtllm = require_trtllm("The PyTorch backend")
        kwargs: dict[str, Any] = {"tensor_parallel_size": tp}
        if pp > 1:
            kwargs["pipeline_parallel_size"] = pp
        llm = trtllm.LLM(str(hf_dir), **kwargs)
        return cls(llm, hf_dir, rank, world_size, end_id_of(hf_dir))

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def _params(self, sampling: Sampling):
        from tensorrt_llm import SamplingParams

        kw: dict[str, Any] = {"max_tokens": sampling.max_new_tokens, "detokenize": False}
        end_id = sampling.end_id if sampling.end_id is not None else self.default_end_id
        if end_id is not None:
            kw["end_id"] = end_id
        if sampling.pad_id is not None:
            kw["pad_id"] = sampling.pad_id
        if sampling.temperature == 0:
            kw["temperature"] = 0.0  # greedy (SamplingParams.params_imply_greedy_decoding)
        else:
            kw.update(temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed)
            if sampling.top_k:
                kw["top_k"] = sampling.top_k
        return SamplingParams(**kw), end_id

    def generate(self, batch: Sequence[Sequence[int]], sampling: Sampling, stream: StreamCallback | None = None
                 ) -> list[TokenOutput]:  # fmt: skip
        if not self.is_leader:
            return []
        params, end_id = self._params(sampling)
        prompts = [list(p) for p in batch]
        if stream is None:
            outs = self._llm.generate(prompts, sampling_params=params, use_tqdm=False)
            return [self._decode(o, end_id, sampling) for o in outs]
        results = []
        keep = holdback(sampling.stop_token_ids)
        for i, prompt in enumerate(prompts):
            sent = 0
            result = self._llm.generate_async(prompt, sampling_params=params, streaming=True)
            for step in result:
                now = self._decode(step, end_id, sampling, final=step.finished)
                done = step.finished or now.finish_reason in ("eos", "stop")
                upto = len(now.token_ids) if done else len(now.token_ids) - keep
                if upto > sent:
                    stream(i, now.token_ids[sent:upto])
                    sent = upto
            final = self._decode(result, end_id, sampling)
            if len(final.token_ids) > sent:
                stream(i, final.token_ids[sent:])
            results.append(final)
        return results

    @staticmethod
    def _decode(request_output, end_id: int | None, sampling: Sampling, final: bool = True) -> TokenOutput:
        out = request_output.outputs[0]
        res = decode(out.token_ids, end_id, sampling.max_new_tokens, sampling.stop_token_ids, final)
        if res.finish_reason != "stop" and out.finish_reason is not None:
            res.finish_reason = {"length": "length", "stop": "eos"}.get(out.finish_reason, res.finish_reason)
        return res

    def close(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None


def _parallel(artifact_dir: Path) -> tuple[int, int, int]:
    """(tp, pp, world size) the artifact was made for; the unified HF checkpoint itself is not split."""
    manifest = optional_manifest(artifact_dir)
    if manifest is not None:
        return layout(manifest)
    config = artifact_dir / "checkpoint" / "config.json"
    if config.is_file():
        return mapping_layout(json.loads(config.read_text()))
    return 1, 1, 1
