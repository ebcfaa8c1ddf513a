"""Fingerprints, atomic stage directories, the build lock, and layout checks (no torch)."""

from __future__ import annotations

import json
import os

import pytest

from builder.errors import LayoutError, LockedError, UsageError
from builder.fingerprint import changed_keys, file_table, fingerprint
from builder.planning.layout import ModelShape, check_layout, valid_pp, valid_tp
from builder.workspace import STAMP, Workspace

SMOL = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}


def test_fingerprint_is_order_independent_and_sensitive():
    a = fingerprint({"x": 1, "y": {"a": [1, 2]}})
    assert a == fingerprint({"y": {"a": [1, 2]}, "x": 1})
    assert a != fingerprint({"x": 2, "y": {"a": [1, 2]}})
    assert changed_keys({"r": {"tp": 1, "pp": 1}}, {"r": {"tp": 2, "pp": 1}}) == ["r.tp"]


def test_stage_dir_appears_only_when_complete(tmp_path):
    ws = Workspace(tmp_path, "art")
    with ws.lock():
        with pytest.raises(RuntimeError), ws.writing("checkpoint") as tmp:
            (tmp / "rank0.safetensors").write_bytes(b"partial")
            raise RuntimeError("killed")
        assert not ws.stage_dir("checkpoint").exists()
        assert not list(ws.dir.glob(".tmp-*")), "a failed stage leaves no temporary directory"
        with ws.writing("checkpoint") as tmp:
            (tmp / "config.json").write_text("{}")
            ws.publish_stage("checkpoint", tmp, {"fingerprint": "abc"})
        assert ws.stamp("checkpoint")["fingerprint"] == "abc"
        # replacing keeps exactly the new content
        with ws.writing("checkpoint") as tmp:
            (tmp / "new.json").write_text("{}")
            ws.publish_stage("checkpoint", tmp, {"fingerprint": "def"})
        assert sorted(p.name for p in ws.stage_dir("checkpoint").iterdir()) == [STAMP, "new.json"]


def test_leftovers_of_a_killed_build_are_cleaned_under_the_lock(tmp_path):
    ws = Workspace(tmp_path, "art")
    (ws.dir / ".tmp-quantize-999").mkdir(parents=True)
    with ws.lock():
        assert not (ws.dir / ".tmp-quantize-999").exists()


def test_damaged_stamp_means_not_complete(tmp_path):
    ws = Workspace(tmp_path, "art")
    ws.stage_dir("resolve").mkdir(parents=True)
    (ws.stage_dir("resolve") / STAMP).write_text("{not json")
    assert ws.stamp("resolve") is None


def test_second_build_is_refused_while_locked(tmp_path):
    ws = Workspace(tmp_path, "art")
    # flock is per open file description: a second open in this process conflicts like another process would
    with (
        ws.lock(),
        pytest.raises(LockedError, match=f"is being built by pid {os.getpid()}"),
        Workspace(tmp_path, "art").lock(),
    ):
        pass


def test_workspace_refuses_names_that_escape(tmp_path):
    with pytest.raises(UsageError):
        Workspace(tmp_path, "../outside")


def test_file_table_hashes_sorted(tmp_path):
    (tmp_path / "b").write_text("b")
    (tmp_path / "a").write_text("a")
    (tmp_path / STAMP).write_text("{}")
    rows = file_table(tmp_path, skip=(STAMP,))
    assert [r["path"] for r in rows] == ["a", "b"]
    assert rows[0]["sha256"] == "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
    assert json.dumps(rows)


def test_layout_names_valid_tp_for_smollm2():
    shape = ModelShape.from_config(SMOL)
    assert shape.head_dim == 64
    assert valid_tp(shape) == [1, 3]
    assert valid_pp(shape) == [1, 2, 3, 5, 6, 10, 15, 30]
    with pytest.raises(LayoutError) as e:
        check_layout(shape, 2, 1)
    assert str(e.value) == (
        "parallel.tp: 2 does not fit LlamaForCausalLM: 9 attention heads are not divisible by tp=2; "
        "3 KV heads can neither be split nor evenly replicated across tp=2. Valid tp values: 1, 3"
    )
    with pytest.raises(LayoutError, match=r"30 layers cannot be split evenly into pp=4 stages. Valid pp values: 1, 2"):
        check_layout(shape, 1, 4)
    check_layout(shape, 3, 5)


def test_kv_heads_replicate_when_tp_is_a_multiple():
    shape = ModelShape.from_config(
        {**SMOL, "num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 1024}
    )
    check_layout(shape, 4, 1)  # 2 KV heads replicated over 4 ranks: TensorRT-LLM supports it
    odd = ModelShape.from_config({**SMOL, "num_attention_heads": 12, "num_key_value_heads": 4})
    with pytest.raises(LayoutError, match="4 KV heads can neither be split nor evenly replicated across tp=6"):
        check_layout(odd, 6, 1)
