"""Calibration text: where it comes from, and how it becomes fixed-length token batches (deterministically).

Sources (recipe `calibration.dataset`):
- ``builtin``: the docstrings of the Python standard library found on this machine. Every Python installation has
  them, they need no download, and trtq ships no copied corpus. The text is English technical prose mixed with code.
- a local ``.txt`` (one document, or documents separated by blank lines), ``.jsonl`` (``text_field`` of each line)
  or ``.parquet`` (``text_field`` column) file, relative to the recipe file;
- ``hf:<dataset>`` with ``config``/``split``/``text_field``: loaded with `datasets` (online, or from the HF cache).

Documents are tokenized, joined with EOS into one stream, cut into ``seq_len`` windows, and ``samples`` windows are
picked with ``random.Random(seed)``: the same recipe always calibrates on the same tokens.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import random
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from builder._deps import require
from builder.errors import UsageError
from builder.recipe.schema import TextSource

log = logging.getLogger("trtq.calibrate")

_MIN_DOC_CHARS = 160


def builtin_documents(limit_chars: int = 4_000_000) -> list[str]:
    """Docstrings of the standard library on this machine: modules in a fixed shuffled order, until ``limit_chars``."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    total = 0
    paths = sorted(stdlib.rglob("*.py"))
    random.Random(0).shuffle(paths)  # a diverse, stable subset when only part is needed
    for path in paths:
        rel = path.relative_to(stdlib).parts
        if rel[0] in ("site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= _MIN_DOC_CHARS:
                    docs.append(doc)
                    total += len(doc)
        if total >= limit_chars:
            break
    return docs


def documents(
    spec: TextSource | object, base_dir: Path, limit_chars: int = 4_000_000, section: str = "calibration"
) -> list[str]:
    """The raw documents of a text source (a recipe's `calibration` or `verify.perplexity`, or `trtq eval`'s flags).
    ``section`` is where the user wrote the source (`calibration`, `verify.perplexity`, or "flags" for `trtq eval`'s
    --dataset/--text-field): every error names the field there."""
    dataset: str = spec.dataset  # type: ignore[attr-defined]
    field: str = spec.text_field  # type: ignore[attr-defined]
    if dataset == "builtin":
        return builtin_documents(limit_chars)
    if dataset.startswith("hf:"):
        return _hf_documents(
            dataset[3:], getattr(spec, "config", None), getattr(spec, "split", "train"), field, section
        )
    path = (base_dir / os.path.expanduser(dataset)).resolve()
    if not path.is_file():
        raise UsageError(f"{_where(section, 'dataset')}: no such file: {path} (or use builtin, or hf:<name>)")
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md", ".text"):
        text = path.read_text(encoding="utf-8", errors="replace")
        return [d.strip() for d in text.split("\n\n") if d.strip()]
    if suffix in (".jsonl", ".json"):
        return list(_jsonl(path, field, section))
    if suffix == ".parquet":
        pq = require("pyarrow.parquet", "Reading a .parquet calibration file")
        table = pq.read_table(path)
        if field not in table.column_names:
            raise UsageError(
                f"{_where(section, 'text_field')}: {path.name} has no column '{field}' (columns: {', '.join(table.column_names)})"
            )
        return [str(t) for t in table.column(field).to_pylist() if t]
    raise UsageError(
        f"{_where(section, 'dataset')}: {path.name}: unsupported file type '{suffix}': use .txt, .jsonl or .parquet"
    )


def _where(section: str, field: str) -> str:
    """How the user wrote a source's field: `calibration.dataset`, or the flag `--dataset` for section "flags"."""
    return f"--{field.replace('_', '-')}" if section == "flags" else f"{section}.{field}"


def _jsonl(path: Path, field: str, section: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{_where(section, 'dataset')}: {path}:{n}: not valid JSON: {e.msg}") from None
            if not isinstance(row, dict) or field not in row:
                raise UsageError(
                    f"{_where(section, 'text_field')}: {path}:{n} has no field '{field}'"
                    + (f" (fields: {', '.join(row)})" if isinstance(row, dict) else "")
                )
            if row[field]:
                yield str(row[field])


def _hf_documents(name: str, config: str | None, split: str, field: str, section: str) -> list[str]:
    datasets = require("datasets", "Calibrating on a Hugging Face dataset (pip install datasets)")
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ValueError...)
        offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE")
        hint = (
            "it is not in the HF cache and the hub is offline: load it once with network, or use a local file"
            if offline or "offline" in str(e).lower() or "connect" in str(e).lower()
            else "check the name, config and split"
        )
        raise UsageError(
            f"{_where(section, 'dataset')}: hf:{name} cannot be loaded ({type(e).__name__}): {hint}"
        ) from None
    if field not in ds.column_names:
        raise UsageError(
            f"{_where(section, 'text_field')}: hf:{name} has no column '{field}' (columns: {', '.join(ds.column_names)})"
        )
    return [str(t) for t in ds[field] if t]


def token_windows(docs: list[str], tokenizer, samples: int, seq_len: int, seed: int):
    """Pack documents into one token stream and pick ``samples`` windows of ``seq_len`` tokens: LongTensor [n, seq_len]."""
    torch = require("torch", "Calibration")
    rng = random.Random(seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    eos = tokenizer.eos_token_id
    need = samples * seq_len * 2  # tokenize only what can be used (x2 leaves room for the random pick)
    stream: list[int] = []
    for i in order:
        ids = tokenizer(docs[i], add_special_tokens=False)["input_ids"]
        stream.extend(ids)
        if eos is not None:
            stream.append(eos)
        if len(stream) >= need:
            break
    windows = len(stream) // seq_len
    if windows == 0:
        raise UsageError(
            f"calibration: the data holds {len(stream)} tokens, fewer than one window of seq_len {seq_len}: "
            "use more text or a smaller seq_len"
        )
    if windows < samples:
        log.warning(
            "calibration: only %d windows of %d tokens in the data (asked for %d samples)", windows, seq_len, samples
        )
    picks = sorted(rng.sample(range(windows), min(samples, windows)))
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    rows = [bos + stream[p * seq_len : (p + 1) * seq_len - len(bos)] for p in picks]
    return torch.tensor(rows, dtype=torch.long)
