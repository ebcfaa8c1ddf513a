"""A strict stand-in for `tensorrt_llm` 1.2.1, built from the recorded signatures in ../trtllm_v1_2_1.json.

`install(monkeypatch, ...)` puts a fake `tensorrt_llm` module tree (and `tensorrt`) into sys.modules. Every callable's
signature comes from the record, so a call the real release would reject (unknown keyword, missing argument, too many
positionals) raises the same TypeError; BuildConfig/PluginConfig fields and values are checked the way the release
checks them; every call is recorded in `StandIn.calls`.

Behaviour follows what the record says the release does:
- `commands.build.parallel_build` writes `config.json` + `rank{N}.engine` for every rank of the checkpoint mapping,
  reading `rank{N}.safetensors` (as `from_checkpoint` would).
- `runtime.ModelRunnerCpp.from_dir` asserts `rank == mpi rank` and loads `rank{rank}.engine`; `generate` returns
  `output_ids` [batch, beams, max_seq_len] holding the prompt, then the generated tokens, right-padded with end_id, and
  `sequence_lengths` [batch, beams]; non-leader ranks get []; `streaming=True` yields the same dicts step by step.
- `LLM` (PyTorch backend) returns generated tokens only, with finish_reason 'stop'/'length'.

The toy "model" is deterministic: after token t comes (t * 7 + 3) % vocab; `end_after` makes it emit end_id after that
many tokens.
"""

from __future__ import annotations

import enum
import inspect
import json
import sys
import types
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

RECORD_PATH = Path(__file__).resolve().parents[1] / "trtllm_v1_2_1.json"
_REQUIRED = "<required>"


def load_record() -> dict[str, Any]:
    return json.loads(RECORD_PATH.read_text())


def signature_of(params: list[dict[str, Any]], drop_self: bool = True) -> inspect.Signature:
    """An inspect.Signature from recorded params (defaults that are expressions become None)."""
    out = []
    for p in params:
        kind = getattr(inspect.Parameter, p["kind"])
        if kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            out.append(inspect.Parameter(p["name"], kind))
            continue
        default = inspect.Parameter.empty if p.get("default") == _REQUIRED else p.get("default")
        if isinstance(default, str) and default.startswith("<expr"):
            default = None
        out.append(inspect.Parameter(p["name"], kind, default=default))
    return inspect.Signature(out)


@dataclass
class StandIn:
    """What the stand-in was asked, and knobs for how it answers."""

    record: dict[str, Any]
    rank: int = 0
    world_size: int = 1
    version: str = "1.2.1"
    sm: int = 90  # tensorrt_llm._utils.get_sm_version(): what PluginConfig.validate() checks
    vocab: int = 512
    end_after: int | None = None  # emit end_id after this many generated tokens
    end_counts_in_length: bool = True  # whether ModelRunnerCpp's sequence_lengths count the end_id token
    end_in_llm_output: bool = False  # whether the LLM API's token_ids keep the end_id token
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def called(self, name: str) -> list[dict[str, Any]]:
        return [args for n, args in self.calls if n == name]

    # ---- the toy model
    def continue_(self, prompt: list[int], max_new: int, end_id: int) -> tuple[list[int], bool]:
        """Generated tokens (end_id included when reached) and whether end_id was reached."""
        out, last = [], prompt[-1] if prompt else 0
        for i in range(max_new):
            if self.end_after is not None and i == self.end_after:
                return out + [end_id], True
            last = (last * 7 + 3) % self.vocab
            if last == end_id:
                last = (last + 1) % self.vocab
            out.append(last)
        return out, False


def _strict(standin: StandIn, name: str, sig: inspect.Signature, body=None, allowed_kwargs: set[str] | None = None):
    """A function with ``sig`` that records its bound arguments, then runs ``body(**bound)``."""

    def fn(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)  # TypeError exactly like the real signature
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        extra = arguments.pop("kwargs", {}) if "kwargs" in arguments else {}
        if allowed_kwargs is not None:
            unknown = sorted(set(extra) - allowed_kwargs)
            if unknown:
                raise TypeError(f"{name}() got unexpected keyword arguments {unknown} (not in the 1.2.1 record)")
        standin.calls.append((name, {**arguments, **extra}))
        return body(**arguments, **extra) if body else None

    fn.__signature__ = sig
    fn.__name__ = name.rsplit(".", 1)[-1]
    return fn


def _module(name: str, monkeypatch) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = ModuleSpec(name, loader=None, is_package=True)
    mod.__path__ = []
    monkeypatch.setitem(sys.modules, name, mod)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, mod)
    return mod


# ---------------------------------------------------------------------------------------------- build side
class KVCacheType(str, enum.Enum):
    CONTINUOUS = "continuous"
    PAGED = "paged"
    DISABLED = "disabled"

    @classmethod
    def _missing_(cls, value):
        if isinstance(value, str):
            for m in cls:
                if m.value == value.lower():
                    return m
        return None


_DEFAULT_PLUGIN_DTYPE = Literal["auto", "float16", "float32", "bfloat16", "int32", None]


def _annotation(text: str, names: dict[str, Any]):
    """A recorded annotation ("Optional[Literal['fp8', None]]") as a typing object; names the record uses resolve in
    ``names``."""
    scope = {"Optional": Optional, "Literal": Literal, "str": str, "int": int, "bool": bool, **names}
    return eval(text, {"__builtins__": {}}, scope)  # noqa: S307 - our own record


def _make_plugin_config(standin: StandIn, rec: dict[str, Any]):
    """PluginConfig as tensorrt_llm/plugin/plugin.py defines it (record: file id 196834873): a pydantic model with
    validate_assignment, 'enable'/'disable' strings mapped to True/False/None, 'auto' reading as dtype, dtype 'auto'
    refused, and validate() refusing the plugins the GPU's SM lacks. Unlike the release (extra='ignore'), unknown
    keywords are refused: the release would drop a misspelled setting silently, which for trtq is a bug."""
    from pydantic import BaseModel, ConfigDict, create_model, field_validator

    fields = {p["name"]: (_annotation(p["annotation"], {"DefaultPluginDtype": _DEFAULT_PLUGIN_DTYPE}), p["default"])
              for p in rec["params"]}  # fmt: skip
    methods = rec.get("methods", {})

    class _PluginConfigBase(BaseModel):
        model_config = ConfigDict(validate_assignment=True, extra="forbid")

        def __init__(self, **data):
            super().__init__(**data)
            standin.calls.append(("tensorrt_llm.plugin.PluginConfig", dict(data)))

        def __getattribute__(self, name: str) -> Any:
            value = object.__getattribute__(self, name)
            if name != "dtype" and isinstance(value, str) and value == "auto":
                return self.dtype
            return value

        @field_validator("dtype", check_fields=False)
        @classmethod
        def validate_dtype_not_auto(cls, v: str) -> str:
            if v == "auto":
                raise ValueError("Plugin dtype cannot be 'auto'")
            return v

        @field_validator("*", mode="before")
        @classmethod
        def convert_enable_disable(cls, value, info):
            if isinstance(value, str) and value == "enable":
                return True
            if isinstance(value, str) and value == "disable":
                annotation = cls.model_fields[info.field_name].annotation
                if annotation is bool or (get_origin(annotation) is Union and bool in get_args(annotation)):
                    return False
                return None
            return value

    if "validate" in methods:  # only what the record has: without it, pydantic's own (classmethod) validate is left
        unsupported = methods["validate"]["unsupported_plugins"]

        def validate(self):
            standin.calls.append(("tensorrt_llm.plugin.PluginConfig.validate", {}))
            for plugin in unsupported.get(str(standin.sm), []):
                val = getattr(self, plugin, None)
                if val is not None and val is not False:
                    raise NotImplementedError(f"{plugin}={val} is not supported on SM {standin.sm}.")

        _PluginConfigBase.validate = validate
    return create_model("PluginConfig", __base__=_PluginConfigBase, **fields)


def _make_build_config(standin: StandIn, rec: dict[str, Any], plugin_cls):
    """BuildConfig as a pydantic model (PR #8330) over the fields and annotations of the last dataclass version read
    (record: file id 205252225). Keywords only; values validated by type (kv_cache_type takes the KVCacheType enum or
    its value); unknown keywords refused (see PluginConfig). No cross-field check: max_input_len > max_seq_len is
    clipped at build time, as build() does."""
    from pydantic import BaseModel, ConfigDict, Field, create_model

    names = {"KVCacheType": KVCacheType, "PluginConfig": plugin_cls, "LoraConfig": dict, "SpeculativeDecodingMode": str}
    factories = {"plugin_config": plugin_cls, "lora_config": dict}
    fields = {}
    for p in rec["params"]:
        ann = _annotation(p["annotation"], names)
        if p["name"] in factories:
            fields[p["name"]] = (ann, Field(default_factory=factories[p["name"]]))
        elif p["name"] == "speculative_decoding_mode":
            fields[p["name"]] = (ann, "NONE")
        else:
            fields[p["name"]] = (ann, p["default"])

    class _BuildConfigBase(BaseModel):
        model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

        def __init__(self, **data):
            super().__init__(**data)
            standin.calls.append(("tensorrt_llm.builder.BuildConfig", dict(data)))

        def to_dict(self) -> dict[str, Any]:
            out = {k: getattr(self, k) for k in type(self).model_fields}
            out["kv_cache_type"] = out["kv_cache_type"].name if out["kv_cache_type"] is not None else None
            out["plugin_config"] = self.plugin_config.model_dump()
            return out

    return create_model("BuildConfig", __base__=_BuildConfigBase, **fields)


class _Mapping:
    def __init__(self, d: dict[str, Any]):
        self.world_size = int(d.get("world_size", 1))
        self.tp_size = int(d.get("tp_size", 1))
        self.pp_size = int(d.get("pp_size", 1))


def _make_pretrained_config(standin: StandIn, model_map: dict[str, str]):
    class PretrainedConfig:
        def __init__(self, raw: dict[str, Any]):
            self.raw = raw
            self.architecture = raw["architecture"]
            self.dtype = raw.get("dtype")
            self.mapping = _Mapping(raw.get("mapping") or {})
            self.quantization = raw.get("quantization") or {}

        @classmethod
        def from_json_file(cls, config_file):
            standin.calls.append(("tensorrt_llm.models.PretrainedConfig.from_json_file", {"config_file": config_file}))
            return cls(json.loads(Path(config_file).read_text()))

    return PretrainedConfig


def _parallel_build(standin: StandIn, model_map, pretrained_cls, build_cls):
    def body(model_config, ckpt_dir, build_config, output_dir, workers, log_level, model_cls, **kwargs):
        if not isinstance(model_config, pretrained_cls):
            raise TypeError("parallel_build: model_config must be a PretrainedConfig")
        if not isinstance(build_config, build_cls):
            raise TypeError("parallel_build: build_config must be a BuildConfig")
        if model_cls is None and model_config.architecture not in model_map:
            raise KeyError(model_config.architecture)  # MODEL_MAP[architecture] in build_model
        if log_level not in ("internal_error", "error", "warning", "info", "verbose", "debug", "trace"):
            raise KeyError(log_level)
        build_config = _at_build_time(build_config, model_config)
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for rank in range(model_config.mapping.world_size):
            shard = Path(ckpt_dir) / f"rank{rank}.safetensors"
            if not shard.is_file():
                raise FileNotFoundError(shard)
            (out / f"rank{rank}.engine").write_bytes(b"standin-engine rank %d\n" % rank + shard.read_bytes()[:64])
        config = {"version": standin.version, "pretrained_config": model_config.raw,
                  "build_config": build_config.to_dict()}  # fmt: skip
        (out / "config.json").write_text(json.dumps(config, indent=1, default=str))
        return True

    return body


def _at_build_time(build_config, model_config):
    """What build() does to (a copy of) the BuildConfig before building (record: _init_max_seq_len and
    update_kv_cache_type): max_seq_len defaults to max_position_embeddings (2048 without one), max_input_len above it is
    clipped, kv_cache_type None becomes PAGED."""
    bc = build_config.model_copy(deep=True)
    if bc.max_seq_len is None:
        bc.max_seq_len = int(model_config.raw.get("max_position_embeddings") or 2048)
    if bc.max_input_len > bc.max_seq_len:
        bc.max_input_len = bc.max_seq_len
    if bc.kv_cache_type is None:
        bc.kv_cache_type = KVCacheType.PAGED
    return bc


# ---------------------------------------------------------------------------------------------- runtime side
def _torch():
    import torch

    return torch


def _check_batch(batch_input_ids):
    torch = _torch()
    if not isinstance(batch_input_ids, list) or not batch_input_ids:
        raise TypeError("batch_input_ids must be a non-empty List[torch.Tensor]")
    for t in batch_input_ids:
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.dtype != torch.int32:
            raise TypeError("each batch_input_ids item must be a 1-D torch.int32 tensor")
    return [t.tolist() for t in batch_input_ids]


class _EngineRunnerBase:
    def __init__(self, standin: StandIn, engine_dir: str, rank: int):
        cfg = json.loads((Path(engine_dir) / "config.json").read_text())
        self.standin = standin
        self.rank = rank
        self.build_config = cfg["build_config"]
        self.max_seq_len = int(self.build_config["max_seq_len"])

    def _outputs(self, prompts, max_new_tokens, end_id, pad_id, num_beams=1, streaming=False):
        torch = _torch()
        if end_id is None:
            raise ValueError("end_id must be given: output_ids are padded with it")
        if len(prompts) > self.build_config["max_batch_size"]:
            raise RuntimeError("batch larger than the engine's max_batch_size")
        if any(len(p) > self.build_config["max_input_len"] for p in prompts):
            raise RuntimeError("prompt longer than the engine's max_input_len")
        gens = []
        for p in prompts:
            if len(p) + max_new_tokens > self.max_seq_len:
                raise RuntimeError("prompt + max_new_tokens exceeds the engine's max_seq_len")
            gens.append(self.standin.continue_(p, max_new_tokens, end_id))

        def snapshot(step: int):
            ids = torch.full((len(prompts), num_beams, self.max_seq_len), end_id, dtype=torch.int32)
            lens = torch.zeros((len(prompts), num_beams), dtype=torch.int32)
            for b, (p, (g, ended)) in enumerate(zip(prompts, gens, strict=True)):
                now = g[:step]
                seq = p + now
                ids[b, :, : len(seq)] = torch.tensor(seq, dtype=torch.int32)
                end_seen = ended and len(now) == len(g)
                lens[b, :] = len(seq) - (1 if end_seen and not self.standin.end_counts_in_length else 0)
            return {"output_ids": ids, "sequence_lengths": lens}

        if streaming:
            longest = max(len(g) for g, _ in gens)
            return (snapshot(s) for s in range(1, longest + 1))
        return snapshot(max_new_tokens + 1)


def _make_model_runner_cpp(standin: StandIn, rec_from_dir, rec_generate):
    allowed = {s.split("(")[0] for s in rec_generate.get("sampling_kwargs_accepted", [])}

    class ModelRunnerCpp(_EngineRunnerBase):
        @classmethod
        def _from_dir(cls, engine_dir, **kw):
            rank = kw["rank"]
            if rank != standin.rank:
                raise AssertionError("rank == world_config.rank")  # from_dir asserts rank == WorldConfig.mpi().rank
            cfg = json.loads((Path(engine_dir) / "config.json").read_text())
            mapping = cfg["pretrained_config"].get("mapping", {})
            if standin.world_size != int(mapping.get("world_size", 1)):
                raise RuntimeError("Assertion failed: mpiSize == tp * pp")
            if not (Path(engine_dir) / f"rank{rank}.engine").is_file():
                raise FileNotFoundError(Path(engine_dir) / f"rank{rank}.engine")
            return cls(standin, str(engine_dir), rank)

        def _generate(self, batch_input_ids, **kw):
            prompts = _check_batch(batch_input_ids)
            if standin.rank != 0:
                return []  # not executor.can_enqueue_requests()
            out = self._outputs(prompts, kw["max_new_tokens"], kw["end_id"], kw["pad_id"], kw.get("num_beams", 1),
                                kw["streaming"])  # fmt: skip
            if kw["streaming"]:
                return out if kw["return_dict"] else (o["output_ids"] for o in out)
            if not kw["return_dict"]:
                return out["output_ids"]
            if not kw["output_sequence_lengths"]:
                out.pop("sequence_lengths")
            return out

    from_dir_sig = signature_of(
        [{"name": "cls", "kind": "POSITIONAL_OR_KEYWORD", "default": _REQUIRED}] + rec_from_dir["params"]
    )
    gen_sig = signature_of(
        [{"name": "self", "kind": "POSITIONAL_OR_KEYWORD", "default": _REQUIRED}] + rec_generate["params"]
    )
    ModelRunnerCpp.from_dir = classmethod(
        _strict(
            standin,
            "tensorrt_llm.runtime.ModelRunnerCpp.from_dir",
            from_dir_sig,
            lambda cls, engine_dir, **kw: cls._from_dir(engine_dir, **kw),
        )  # fmt: skip
    )
    ModelRunnerCpp.generate = _strict(standin, "tensorrt_llm.runtime.ModelRunnerCpp.generate", gen_sig,
                                      lambda self, batch_input_ids, **kw: self._generate(batch_input_ids, **kw),
                                      allowed_kwargs=allowed)  # fmt: skip
    return ModelRunnerCpp


def _make_model_runner(standin: StandIn, rec_from_dir, rec_generate):
    sampling_attrs = {"max_new_tokens", "end_id", "pad_id", "num_beams", "temperature", "top_k", "top_p",
                      "random_seed", "repetition_penalty", "return_dict", "output_sequence_lengths",
                      "length_penalty", "presence_penalty", "frequency_penalty", "min_length"}  # fmt: skip

    class ModelRunner(_EngineRunnerBase):
        pass

    def from_dir(cls, engine_dir, **kw):
        if not (Path(engine_dir) / f"rank{kw['rank']}.engine").is_file():
            raise FileNotFoundError(Path(engine_dir) / f"rank{kw['rank']}.engine")
        return cls(standin, str(engine_dir), kw["rank"])

    def generate(self, batch_input_ids, **kw):
        prompts = _check_batch(batch_input_ids)
        out = self._outputs(prompts, kw.get("max_new_tokens", 20), kw.get("end_id"), kw.get("pad_id"),
                            kw.get("num_beams", 1), kw["streaming"])  # fmt: skip
        return out if kw.get("return_dict") else (out["output_ids"] if not kw["streaming"] else out)

    from_dir_sig = signature_of(
        [{"name": "cls", "kind": "POSITIONAL_OR_KEYWORD", "default": _REQUIRED}] + rec_from_dir["params"]
    )
    gen_sig = signature_of(
        [{"name": "self", "kind": "POSITIONAL_OR_KEYWORD", "default": _REQUIRED}] + rec_generate["params"]
    )
    ModelRunner.from_dir = classmethod(
        _strict(standin, "tensorrt_llm.runtime.ModelRunner.from_dir", from_dir_sig, from_dir)
    )
    ModelRunner.generate = _strict(standin, "tensorrt_llm.runtime.ModelRunner.generate", gen_sig, generate,
                                   allowed_kwargs=sampling_attrs)  # fmt: skip
    return ModelRunner


# ---------------------------------------------------------------------------------------------- LLM API
def _make_llm_api(standin: StandIn, rec_llm, rec_sp):
    sp_fields = {p["name"]: p["default"] for p in rec_sp["params"]}
    llm_kwargs = set(rec_llm["kwargs_used_by_trtq"]) | {"backend", "_mpi_session"}

    class SamplingParams:
        def __init__(self, **kwargs):  # trtq passes keywords only
            unknown = sorted(set(kwargs) - set(sp_fields))
            if unknown:
                raise TypeError(f"SamplingParams.__init__() got unexpected keyword arguments {unknown}")
            self.__dict__.update({**sp_fields, **kwargs})
            if self.pad_id is None:
                self.pad_id = self.end_id
            self.best_of = self.best_of or self.n
            if self.top_p is not None and not 0 <= self.top_p <= 1:
                raise ValueError(f"require 0 <= top_p <= 1, got top_p={self.top_p}")
            if self.top_k is not None and self.top_k < 0:
                raise ValueError(f"require top_k >= 0, got top_k={self.top_k}")
            if self.temperature is not None and self.temperature < 0:
                raise ValueError(f"require temperature >= 0, got temperature={self.temperature}")
            standin.calls.append(("tensorrt_llm.SamplingParams", dict(kwargs)))

    class CompletionOutput:
        def __init__(self):
            self.index, self.text, self.token_ids, self.finish_reason = 0, "", [], None
            self._last = 0

        @property
        def token_ids_diff(self):
            return self.token_ids[self._last :]

    class RequestOutput:
        def __init__(self, prompt_token_ids, sp: SamplingParams, end_id: int):
            self.prompt_token_ids = prompt_token_ids
            gen, ended = standin.continue_(prompt_token_ids, sp.max_tokens, end_id)
            if ended and not standin.end_in_llm_output:
                gen = gen[:-1]
            self._gen, self._ended = gen, ended
            self.outputs = [CompletionOutput()]
            self.finished = False
            self._step = 0

        def _advance(self, n):
            o = self.outputs[0]
            o._last = len(o.token_ids)
            o.token_ids = self._gen[:n]
            if n >= len(self._gen):
                self.finished = True
                o.finish_reason = "stop" if self._ended else "length"

        def result(self):
            self._advance(len(self._gen))
            return self

        def __iter__(self):
            return self

        def __next__(self):
            if self.finished:
                raise StopIteration
            self._step += 1
            self._advance(self._step)
            return self

    class LLM:
        def _init(self, model, tensor_parallel_size, **kw):
            extra = {k: v for k, v in kw.items() if k not in {p["name"] for p in rec_llm["params"]}}
            for key in extra:
                if key not in llm_kwargs:
                    raise ValueError(f"LLM got invalid argument: {key}")
            if not (Path(model) / "config.json").is_file():
                raise ValueError(f"{model} is not a Hugging Face model directory")
            self.model = str(model)
            self.tensor_parallel_size = tensor_parallel_size
            self.end_id = json.loads((Path(model) / "config.json").read_text()).get("eos_token_id", 2)
            self._shut = False

        def _sp(self, sp):
            sp = sp or SamplingParams()
            if sp.end_id is None:
                sp.end_id = self.end_id
            return sp

        def _generate(self, inputs, sampling_params, **kw):
            if self._shut:
                raise RuntimeError("LLM is shutting down")
            batched = isinstance(inputs, list) and not (inputs and isinstance(inputs[0], int))
            items = inputs if batched else [inputs]
            for i in items:
                if not (isinstance(i, list) and all(isinstance(t, int) for t in i)):
                    raise TypeError(f"The inputs must be type str or list of int, but got {type(i)}")
            outs = [
                RequestOutput(list(i), self._sp(sampling_params), self._sp(sampling_params).end_id).result()
                for i in items
            ]
            return outs if batched else outs[0]

        def _generate_async(self, inputs, sampling_params, streaming, **kw):
            sp = self._sp(sampling_params)
            r = RequestOutput(list(inputs), sp, sp.end_id)
            return r if streaming else r.result()

    P = lambda n, d=None: {"name": n, "kind": "POSITIONAL_OR_KEYWORD", "default": d}  # noqa: E731
    self_p = [P("self", _REQUIRED)]
    init_sig = signature_of(self_p + rec_llm["params"])
    LLM.__init__ = _strict(standin, "tensorrt_llm.LLM", init_sig,
                           lambda self, model, tensor_parallel_size, **kw: self._init(model, tensor_parallel_size, **kw))  # fmt: skip
    gen = rec_llm["methods"]["generate"]["params"]
    LLM.generate = _strict(standin, "tensorrt_llm.LLM.generate", signature_of(self_p + gen),
                           lambda self, inputs, sampling_params, **kw: self._generate(inputs, sampling_params))  # fmt: skip
    gen_async = rec_llm["methods"]["generate_async"]["params"]
    LLM.generate_async = _strict(standin, "tensorrt_llm.LLM.generate_async", signature_of(self_p + gen_async),
                                 lambda self, inputs, sampling_params, streaming, **kw:
                                 self._generate_async(inputs, sampling_params, streaming))  # fmt: skip
    LLM.shutdown = _strict(standin, "tensorrt_llm.LLM.shutdown", signature_of(self_p),
                           lambda self: setattr(self, "_shut", True))  # fmt: skip
    return LLM, SamplingParams


# ---------------------------------------------------------------------------------------------- install
def install(monkeypatch, record: dict[str, Any] | None = None, **knobs) -> StandIn:
    """Put the stand-in `tensorrt_llm` (and `tensorrt`) into sys.modules for one test; return its recorder.
    ``record``: a (modified) copy of the record to build it from instead of the file."""
    record = load_record() if record is None else record
    s = record["symbols"]
    standin = StandIn(record=record, **knobs)
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        monkeypatch.delitem(sys.modules, name)
    root = _module("tensorrt_llm", monkeypatch)
    root.__version__ = standin.version
    root.mpi_rank = lambda: standin.rank
    root.mpi_world_size = lambda: standin.world_size
    utils = _module("tensorrt_llm._utils", monkeypatch)
    utils.mpi_rank, utils.mpi_world_size = root.mpi_rank, root.mpi_world_size
    utils.get_sm_version = lambda: standin.sm

    plugin_cls = _make_plugin_config(standin, s["tensorrt_llm.plugin.PluginConfig"])
    _module("tensorrt_llm.plugin", monkeypatch).PluginConfig = plugin_cls
    build_cls = _make_build_config(standin, s["tensorrt_llm.builder.BuildConfig"], plugin_cls)
    _module("tensorrt_llm.builder", monkeypatch).BuildConfig = build_cls
    _module("tensorrt_llm.llmapi", monkeypatch)
    _module("tensorrt_llm.llmapi.kv_cache_type", monkeypatch).KVCacheType = KVCacheType
    model_map = s["tensorrt_llm.models.MODEL_MAP"]["entries_relevant"]
    models = _module("tensorrt_llm.models", monkeypatch)
    models.MODEL_MAP = dict(model_map)
    models.PretrainedConfig = _make_pretrained_config(standin, model_map)
    _module("tensorrt_llm.commands", monkeypatch)
    cmd = _module("tensorrt_llm.commands.build", monkeypatch)
    # parallel_build hands **kwargs down to build_model, which reads only these (and trtllm-build adds use_fused_mlp)
    build_kwargs = {k.split()[0] for k in s["tensorrt_llm.commands.build.build_model"]["kwargs_read"]}
    cmd.parallel_build = _strict(
        standin, "tensorrt_llm.commands.build.parallel_build",
        signature_of(s["tensorrt_llm.commands.build.parallel_build"]["params"]),
        _parallel_build(standin, model_map, models.PretrainedConfig, build_cls),
        allowed_kwargs=build_kwargs | {"use_fused_mlp"},
    )  # fmt: skip

    runtime = _module("tensorrt_llm.runtime", monkeypatch)
    runtime.PYTHON_BINDINGS = True
    runtime.ModelRunnerCpp = _make_model_runner_cpp(
        standin, s["tensorrt_llm.runtime.ModelRunnerCpp.from_dir"], s["tensorrt_llm.runtime.ModelRunnerCpp.generate"]
    )
    runtime.ModelRunner = _make_model_runner(
        standin, s["tensorrt_llm.runtime.ModelRunner.from_dir"], s["tensorrt_llm.runtime.ModelRunner.generate"]
    )
    root.LLM, root.SamplingParams = _make_llm_api(standin, s["tensorrt_llm.LLM"], s["tensorrt_llm.SamplingParams"])

    trt = types.ModuleType("tensorrt")
    trt.__spec__ = ModuleSpec("tensorrt", loader=None)
    trt.__version__ = "10.14.1"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return standin
