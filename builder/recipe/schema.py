"""The recipe: one YAML file that says what to build. Validated once, here, into frozen objects.

Every later stage trusts a `Recipe`; nothing downstream re-validates user input.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime.formats import FORMAT_NAMES, FORMATS, KV_CACHE_NAMES, KV_CACHES

Format = Literal[FORMAT_NAMES]  # the format table's rows (runtime/formats.py)
KvCache = Literal[KV_CACHE_NAMES]
ALGORITHMS = tuple(dict.fromkeys(a for spec in FORMATS.values() for a in spec.algorithms))
Target = Literal["checkpoint", "hf", "engine"]
Dtype = Literal["auto", "float16", "bfloat16"]
PluginDtype = Literal["auto", "float16", "bfloat16", "float32", "disable"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Section):
    """Where the model comes from. Exactly one of `hub`, `path`, `gguf`."""

    hub: str | None = Field(None, description="Hugging Face hub id, e.g. meta-llama/Llama-3.1-8B-Instruct")
    revision: str | None = Field(None, description="Commit sha, tag or branch; required with `hub`")
    path: str | None = Field(None, description="Local Hugging Face model directory (relative to the recipe file)")
    gguf: str | None = Field(
        None,
        description="A GGUF file (relative to the recipe file), or package://<python package>/<file> for one shipped in a package",
    )
    dtype: Dtype = Field(
        "auto",
        description="Compute dtype for quantized formats; auto = the model's own (float32 models -> float16)",
    )
    trust_remote_code: bool = Field(False, description="Run Python code shipped with the model (off by default)")
    allow_pickle: bool = Field(
        False, description="Allow loading pickled (.bin/.pt) weights; safetensors only by default"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        given = [k for k in ("hub", "path", "gguf") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one model source: hub (with revision), path or gguf"
                + (f"; got {', '.join(given)}" if given else "")
            )
        if self.hub is not None:
            if not HUB_ID_RE.match(self.hub):
                raise ValueError(f"hub: '{self.hub}' is not a hub id of the form org/name")
            if not self.revision:
                raise ValueError("revision: required with hub: pin a commit sha, tag or branch (e.g. revision: main)")
        elif self.revision is not None:
            raise ValueError("revision: only applies to a hub model")
        return self

    @property
    def kind(self) -> str:
        return "hub" if self.hub else "path" if self.path else "gguf"


class QuantizationSpec(_Section):
    format: Format = Field("fp16", description="Weight/activation format of the TensorRT-LLM checkpoint")
    kv_cache: KvCache = Field("none", description="KV-cache quantization")
    exclude: tuple[str, ...] = Field(("lm_head",), description="Module name patterns (fnmatch) kept in high precision")
    smoothquant_alpha: float | None = Field(
        None, ge=0.0, le=1.0, description="SmoothQuant migration strength (int8_sq); null = trtq's default"
    )
    awq_block_size: Literal["auto", 32, 64, 128] = Field(
        "auto", description="AWQ group size; auto = the largest of 128/64/32 dividing every per-rank width"
    )
    algorithm: Literal[("auto", *ALGORITHMS)] = Field(
        "auto", description="Calibration algorithm; auto = the format's default"
    )


class TextSource(_Section):
    """Where text comes from: calibration data and the perplexity gate's eval data share these fields."""

    dataset: str = Field(
        "builtin",
        description="builtin | a local .txt/.jsonl/.parquet file | hf:<dataset name> (with config/split/text_field)",
    )
    text_field: str = Field("text", description="Field/column holding the text (.jsonl, .parquet, hf:)")
    config: str | None = Field(None, description="Dataset config name (hf:)")
    split: str = Field("train", description="Dataset split (hf:)")


class CalibrationSpec(TextSource):
    samples: int | None = Field(
        None, ge=1, le=100_000, description="Calibration windows; null = 128 (32 for AWQ, whose search is costly)"
    )
    seq_len: int = Field(512, ge=8, le=131_072)
    batch_size: int = Field(1, ge=1, le=1024)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when a GPU is present")


class ParallelSpec(_Section):
    tp: int = Field(1, ge=1, le=256, description="Tensor-parallel ranks")
    pp: int = Field(1, ge=1, le=256, description="Pipeline-parallel ranks")

    @property
    def world_size(self) -> int:
        return self.tp * self.pp


class PluginSpec(_Section):
    gemm: PluginDtype = "auto"
    gpt_attention: PluginDtype = "auto"
    context_fmha: bool = True
    paged_context_fmha: bool = True
    fp8_context_fmha: bool = True
    multiple_profiles: bool = False


class EngineSpec(_Section):
    max_batch_size: int = Field(64, ge=1, le=65_536)
    max_input_len: int = Field(1024, ge=1, le=1_048_576)
    max_seq_len: int = Field(2048, ge=2, le=1_048_576)
    max_num_tokens: int = Field(8192, ge=1, le=1_048_576)
    max_beam_width: int = Field(1, ge=1, le=64)
    kv_cache_type: Literal["paged", "continuous", "disabled"] = "paged"
    plugins: PluginSpec = PluginSpec()
    strongly_typed: bool = True
    timing_cache: str | None = Field(None, description="Timing cache file to read and update (speeds up rebuilds)")
    workers: int = Field(1, ge=1, le=64, description="Ranks built in parallel (one GPU each)")

    @model_validator(mode="after")
    def _lengths(self) -> EngineSpec:
        if self.max_input_len > self.max_seq_len:
            raise ValueError(
                f"max_input_len: {self.max_input_len} is larger than max_seq_len ({self.max_seq_len}): "
                "max_seq_len counts prompt and output tokens together"
            )
        return self


class PromptCheck(_Section):
    """A smoke prompt, run greedily through the artifact; its output is stored in verify/prompts.json."""

    prompt: str
    expect: str | None = Field(None, description="Substring the output must contain")
    regex: str | None = Field(None, description="Regular expression the output must match (re.search)")
    chat: bool | None = Field(
        None, description="Wrap the prompt in the tokenizer's chat template; null = when the tokenizer has one"
    )
    max_tokens: int = Field(32, ge=1, le=4096, description="Tokens to generate")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class PerplexityGate(TextSource):
    """Fail the build when the artifact's perplexity exceeds the unquantized model's by more than max_increase."""

    dataset: str = Field(
        "builtin",
        description="builtin (held out from calibration) | a local .txt/.jsonl/.parquet file | hf:<dataset name>",
    )
    split: str = Field("test", description="Dataset split (hf:)")
    tokens: int = Field(4096, ge=16, le=10_000_000, description="Tokens of eval text scored")
    window: int = Field(512, ge=8, le=131_072, description="Tokens per scored window (capped at the model's context)")
    max_increase: float = Field(
        0.10, ge=0.0, description="Allowed relative perplexity increase over the source model (0.10 = 10%)"
    )


class VerifySpec(_Section):
    """The `verify` stage (present = on): the exported checkpoint runs on trtq's CPU reference runtime and its logits
    are compared with the ModelOpt fake-quant model and the unquantized source model (thresholds per format)."""

    reference: bool = Field(True, description="Compare the checkpoint's logits with the fake-quant and source models")
    texts: str | None = Field(None, description="Text file for the comparison (paragraphs); null = built-in texts")
    max_tokens: int = Field(128, ge=2, le=8192, description="Tokens per text in the comparison")
    perplexity: PerplexityGate | None = None
    prompts: tuple[PromptCheck, ...] = ()


class PublishTarget(_Section):
    to: str = Field(description="hf://org/name[@branch], s3://bucket/prefix, oci://registry/repo:tag or file:///path")

    @field_validator("to")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not re.match(r"^(hf|s3|oci|file)://.+", v):
            raise ValueError(f"'{v}' is not a publish URL: use hf://, s3://, oci:// or file://")
        return v


class Recipe(_Section):
    """A whole recipe. `trtq schema` prints its JSON Schema."""

    name: str = Field(description="Artifact name: the directory under the artifact root (letters, digits, . _ -)")
    model: ModelSpec
    quantization: QuantizationSpec = QuantizationSpec()
    calibration: CalibrationSpec = CalibrationSpec()
    parallel: ParallelSpec = ParallelSpec()
    targets: tuple[Target, ...] = Field(
        ("checkpoint", "engine"), min_length=1, description="What to produce: checkpoint, hf, engine"
    )
    engine: EngineSpec = EngineSpec()
    verify: VerifySpec | None = None
    publish: tuple[PublishTarget, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v) or v in (".", ".."):
            raise ValueError(f"'{v}' is not a valid artifact name: use letters, digits, '.', '_' and '-' (no '/')")
        return v

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("targets: each target at most once")
        return v

    @model_validator(mode="after")
    def _cross(self) -> Recipe:
        q = self.quantization
        fmt, dtype = q.format, self.model.dtype
        spec, kv = FORMATS[fmt], KV_CACHES[q.kv_cache]
        if spec.dtype and dtype not in ("auto", spec.dtype):
            raise ValueError(
                f"model.dtype: quantization.format {fmt} exports {spec.dtype} weights but model.dtype is {dtype}: "
                f"set model.dtype to auto or {spec.dtype}"
            )
        if q.kv_cache not in spec.kv_caches:
            raise ValueError(
                f"quantization.kv_cache: {q.kv_cache} cannot be combined with {fmt}: use kv_cache "
                + " or ".join(spec.kv_caches)
            )
        if q.smoothquant_alpha is not None and "smoothquant" not in spec.algorithms:
            with_alpha = [f for f, s in FORMATS.items() if "smoothquant" in s.algorithms]
            raise ValueError(
                f"quantization.smoothquant_alpha: only applies to {', '.join(with_alpha)}, not {fmt}: remove it"
            )
        if q.awq_block_size != "auto" and not spec.grouped:
            grouped = [f for f, s in FORMATS.items() if s.grouped]
            raise ValueError(
                f"quantization.awq_block_size: only applies to {' and '.join(grouped)}, not {fmt}: remove it"
            )
        allowed = ("auto", *spec.algorithms)
        if q.algorithm not in allowed:
            raise ValueError(
                f"quantization.algorithm: {q.algorithm} does not apply to {fmt}: use one of {', '.join(allowed)}"
            )
        if "hf" in self.targets and not (spec.unified_hf and kv.unified_hf):
            ok = [f for f, s in FORMATS.items() if s.unified_hf]
            what = fmt if not spec.unified_hf else f"kv_cache {q.kv_cache}"
            raise ValueError(
                f"targets: the unified HF checkpoint cannot hold {what} (ModelOpt's HF export and TensorRT-LLM's "
                f"PyTorch backend support {', '.join(ok)}, with kv_cache "
                + " or ".join(k for k, s in KV_CACHES.items() if s.unified_hf)
                + "): drop hf or change the format"
            )
        return self

    @property
    def export_dtype(self) -> str:
        """The `dtype` of the TensorRT-LLM checkpoint ('float16' or 'bfloat16'), or 'auto' to take the model's."""
        return FORMATS[self.quantization.format].dtype or self.model.dtype
