"""Stage `engine` (step `build`): TensorRT-LLM engines, one per rank, for the pinned TensorRT-LLM release (1.2.1).

It does what `trtllm-build` does (tensorrt_llm/commands/build.py: PluginConfig + BuildConfig from the flags, then
`parallel_build`), from the recipe's `engine` section, and records the equivalent `trtllm-build` command line so a user
can reproduce the engines by hand. Every tensorrt_llm call made here is pinned down by tests/contract.

Without TensorRT-LLM (any machine but NVIDIA's container) it stops with the exact command that finishes the build.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

from builder._deps import version
from builder.errors import StageFailed, UsageError
from builder.model.load import TOKENIZER_FILES
from builder.recipe.schema import EngineSpec, Recipe
from runtime.formats import sm_problem
from runtime.gpu import Gpu, local_gpus
from runtime.runners._trtllm import has_engine_backend, parse_version

log = logging.getLogger("trtq.engine")

CONTAINER = "nvcr.io/nvidia/tensorrt-llm/release:1.2.1"
NAME = "engine"
VERB = "build"
AFTER = ("checkpoint",)
LIBRARIES = ("tensorrt-llm", "tensorrt")
DELIVERABLE = True


def wanted(recipe: Recipe) -> bool:
    return "engine" in recipe.targets


def reads(recipe: Recipe, ctx) -> dict[str, Any]:
    return {"engine": recipe.engine.model_dump(mode="json"), **fingerprint_facts()}


def run(ctx) -> dict[str, Any]:
    recipe_file = str(ctx.recipe_path) if ctx.recipe_path else None
    return build_engines(ctx.recipe, ctx.upstream("checkpoint"), ctx.out, recipe_file=recipe_file)


# ---------------------------------------------------------------------------------------------- fingerprint
def fingerprint_facts() -> dict[str, Any]:
    """What an engine depends on beyond the recipe and the checkpoint: TensorRT-LLM, TensorRT, and the GPU's SM.

    Engines only run on the compute capability and TensorRT version they were built with, so a change of either
    must rebuild them. Cheap (no torch import): the pipeline calls it while planning.
    """
    gpus = local_gpus()
    return {
        "tensorrt_llm": version("tensorrt-llm") or version("tensorrt_llm"),
        "tensorrt": version("tensorrt") or version("tensorrt-cu12") or version("tensorrt_cu13"),
        "gpu_compute_capability": gpus[0].compute_capability if gpus else None,
    }


# ---------------------------------------------------------------------------------------------- command line
def container_command(recipe_file: str | None) -> str:
    """The command that finishes a build inside NVIDIA's container, from the checkpoints built here."""
    recipe_arg = shlex.quote(recipe_file or "recipe.yaml")
    return (
        f"docker run --rm --gpus all --ipc=host --ulimit memlock=-1 -v $PWD:/work -w /work {CONTAINER} "
        f"bash -c 'pip install --no-deps /work && trtq build {recipe_arg}'"
    )


def _plugin_dtype(value: str) -> str | None:
    return None if value == "disable" else value


def _onoff(flag: bool) -> str:
    return "enable" if flag else "disable"


def trtllm_build_args(engine: EngineSpec, checkpoint: Path, output: Path) -> list[str]:
    """The `trtllm-build` argument list equivalent to what `build_engines` asks of the Python API."""
    p = engine.plugins
    args = [
        "trtllm-build",
        "--checkpoint_dir", str(checkpoint),
        "--output_dir", str(output),
        "--max_batch_size", str(engine.max_batch_size),
        "--max_input_len", str(engine.max_input_len),
        "--max_seq_len", str(engine.max_seq_len),
        "--max_num_tokens", str(engine.max_num_tokens),
        "--max_beam_width", str(engine.max_beam_width),
        "--kv_cache_type", engine.kv_cache_type,
        "--gemm_plugin", p.gemm,
        "--gpt_attention_plugin", p.gpt_attention,
        "--context_fmha", _onoff(p.context_fmha),
        "--use_paged_context_fmha", _onoff(p.paged_context_fmha),
        "--use_fp8_context_fmha", _onoff(p.fp8_context_fmha),
        "--multiple_profiles", _onoff(p.multiple_profiles),
        "--workers", str(engine.workers),
    ]  # fmt: skip
    if engine.timing_cache:
        args += ["--input_timing_cache", engine.timing_cache, "--output_timing_cache", engine.timing_cache]
    return args


def trtllm_build_command(engine: EngineSpec, checkpoint: Path, output: Path) -> str:
    return shlex.join(trtllm_build_args(engine, checkpoint, output))


# ---------------------------------------------------------------------------------------------- preflight
def check_trtllm_version(v: str) -> None:
    if not parse_version(v):
        raise StageFailed(f"engine: cannot read the tensorrt_llm version '{v}': use {CONTAINER}")
    if not has_engine_backend(v):
        raise StageFailed(
            f"engine: tensorrt_llm {v} has no TensorRT engine backend (removed after 1.3.0rc20): "
            f"build engines in {CONTAINER}, or use targets [hf] for the PyTorch backend"
        )


def preflight(recipe: Recipe, checkpoint: Path, gpus: list[Gpu] | None = None) -> Gpu:
    """Check, before anything heavy, that engines can be built here; return the GPU they are built for.

    Each failure is one line: tensorrt_llm missing or too new, no GPU, the format not supported by the GPU's compute
    capability, or too little GPU memory for the largest rank.
    """
    import importlib.util

    if importlib.util.find_spec("tensorrt_llm") is None:
        raise StageFailed(
            "engine: tensorrt_llm is not installed here, so the checkpoint is ready but no engine was built. "
            f"Finish inside the TensorRT-LLM container: {container_command(None)} "
            f"(or by hand there: {trtllm_build_command(recipe.engine, checkpoint, checkpoint.parent / 'engine')}; "
            "or stop at the checkpoint with --until export)"
        )
    import tensorrt_llm

    check_trtllm_version(str(getattr(tensorrt_llm, "__version__", "")))
    gpus = local_gpus() if gpus is None else gpus
    if not gpus:
        raise StageFailed("engine: no GPU is visible (nvidia-smi and torch.cuda see none): run on a GPU machine "
                          "with `docker run --gpus all ...`")  # fmt: skip
    gpu = gpus[0]
    problem = sm_problem(recipe.quantization.format, recipe.quantization.kv_cache, gpu.sm, gpu.name)
    if problem:
        raise UsageError(problem)
    from builder.planning.plan import alternatives, estimate, fit

    config = json.loads((checkpoint / "config.json").read_text())
    est = estimate(config, recipe.quantization.format, recipe.quantization.kv_cache, recipe.parallel.tp,
                   recipe.parallel.pp, recipe.engine)  # fmt: skip
    verdict = fit(est, gpu.memory_bytes)
    if not verdict.fits:
        alt = alternatives(config, est, gpu.memory_bytes, gpu.compute_capability)
        raise UsageError(
            f"engine: {verdict.reason} on {gpu.name}: "
            + (f"try {' or '.join(alt)}" if alt else "lower engine.max_seq_len / max_batch_size or use more GPUs")
        )
    return gpu


# ---------------------------------------------------------------------------------------------- build
def _kv_cache_type(name: str):
    """KVCacheType for BuildConfig: the Python wrapper of the 1.2 line, else the C++ bindings' enum (older 1.x)."""
    try:
        from tensorrt_llm.llmapi.kv_cache_type import KVCacheType
    except ImportError:
        from tensorrt_llm.bindings import KVCacheType

        return KVCacheType.from_string(name)
    return KVCacheType(name)


def build_config(recipe: Recipe, ckpt_config: dict[str, Any], scratch_cache: Path | None = None):
    """The BuildConfig that `trtllm-build` would make from `trtllm_build_args` (same values, same fixed choices)."""
    from tensorrt_llm.builder import BuildConfig
    from tensorrt_llm.plugin import PluginConfig

    engine, p = recipe.engine, recipe.engine.plugins
    quant_algo = (ckpt_config.get("quantization") or {}).get("quant_algo")
    plugin = PluginConfig(
        dtype=ckpt_config.get("dtype", "float16"),
        gemm_plugin=_plugin_dtype(p.gemm),
        gpt_attention_plugin=_plugin_dtype(p.gpt_attention),
        context_fmha=p.context_fmha,
        use_paged_context_fmha=p.paged_context_fmha,
        use_fp8_context_fmha=p.fp8_context_fmha,
        multiple_profiles=p.multiple_profiles,
        # trtllm-build turns the fused MLP off for every quantization but FP8 and mixed precision.
        use_fused_mlp=quant_algo in (None, "FP8", "MIXED_PRECISION"),
    )
    plugin.validate()  # as trtllm-build does after PluginConfig.from_arguments: plugins this GPU's SM lacks raise
    return BuildConfig(
        max_input_len=engine.max_input_len,
        max_seq_len=engine.max_seq_len,
        max_batch_size=engine.max_batch_size,
        max_beam_width=engine.max_beam_width,
        max_num_tokens=engine.max_num_tokens,
        kv_cache_type=_kv_cache_type(engine.kv_cache_type),
        strongly_typed=engine.strongly_typed,
        input_timing_cache=engine.timing_cache,
        # Without a recipe cache, TensorRT's timing cache goes to a scratch file inside the stage (removed after the
        # build), not to model.cache in the current directory as trtllm-build's default would.
        output_timing_cache=engine.timing_cache or str(scratch_cache or "model.cache"),
        plugin_config=plugin,
    )


def build_engines(recipe: Recipe, checkpoint: Path, out: Path, recipe_file: str | None = None) -> dict[str, Any]:
    """Build `config.json` + `rank{N}.engine` for every rank of ``checkpoint`` into ``out``.

    Returns the stage result: the equivalent `trtllm-build` command, the ranks built, and the hardware facts
    (GPU, compute capability, TensorRT-LLM and TensorRT versions) that the manifest records.
    """
    command = trtllm_build_command(recipe.engine, checkpoint, checkpoint.parent / "engine")
    try:
        gpu = preflight(recipe, checkpoint)
    except StageFailed as e:
        if recipe_file and "not installed here" in str(e):
            raise StageFailed(str(e).replace(container_command(None), container_command(recipe_file))) from None
        raise
    from tensorrt_llm.commands.build import parallel_build
    from tensorrt_llm.models import PretrainedConfig

    log.info("equivalent command: %s", command)
    ckpt_config = json.loads((checkpoint / "config.json").read_text())
    model_config = PretrainedConfig.from_json_file(str(checkpoint / "config.json"))
    world = int((ckpt_config.get("mapping") or {}).get("world_size", 1))
    gpu_count = max(1, len(local_gpus()))
    workers = min(recipe.engine.workers, world, gpu_count)  # trtllm-build: min(cuda device count, --workers)
    if workers != recipe.engine.workers:
        log.info("workers %d (asked %d): %d rank(s) to build on %d GPU(s)", workers, recipe.engine.workers, world,
                 gpu_count)  # fmt: skip
    t0 = time.perf_counter()
    try:
        scratch = out / "timing.cache"
        parallel_build(model_config, str(checkpoint), build_config(recipe, ckpt_config, scratch), str(out),
                       workers=workers, log_level="info")  # fmt: skip
        scratch.unlink(missing_ok=True)
        _forget_scratch_path(out / "config.json", scratch)
    except (RuntimeError, AssertionError, ValueError) as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        first = lines[0] + (f": {lines[1].strip()}" if "validation error" in lines[0] and len(lines) > 1 else "")
        raise StageFailed(f"engine: TensorRT-LLM failed to build: {first} (reproduce with: {command})") from e
    missing = [f"rank{r}.engine" for r in range(world) if not (out / f"rank{r}.engine").is_file()]
    if missing or not (out / "config.json").is_file():
        raise StageFailed(f"engine: the build finished without {', '.join(missing) or 'config.json'} in {out}")
    for name in TOKENIZER_FILES:  # runners find the tokenizer next to the engines (the one list: builder/model/load.py)
        if (checkpoint / name).is_file():
            shutil.copyfile(checkpoint / name, out / name)
    import tensorrt_llm

    seconds = time.perf_counter() - t0
    log.info("%d engine(s) for %s (SM %s) in %.1f s", world, gpu.name, gpu.compute_capability, seconds)
    return {
        "trtllm_build": command,
        "ranks": world,
        "hardware": {
            "gpu": gpu.name,
            "compute_capability": gpu.compute_capability,
            "gpu_memory_bytes": gpu.memory_bytes,
            "tensorrt_llm": str(tensorrt_llm.__version__),
            "tensorrt": _tensorrt_version(),
        },
    }


def _forget_scratch_path(config: Path, scratch: Path) -> None:
    """TensorRT-LLM records build_config.output_timing_cache in the engine's config.json: for the scratch cache that
    is a path inside this build's temporary directory (with its pid), which would make two builds of one recipe
    differ and leak the build machine's paths. Keep the file's name only (the runtime never reads it)."""
    if not config.is_file():
        return
    text = config.read_text()
    escaped = json.dumps(str(scratch))[1:-1]
    if escaped in text:
        config.write_text(text.replace(escaped, scratch.name))


def _tensorrt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return version("tensorrt")
    return str(getattr(tensorrt, "__version__", None) or version("tensorrt"))
