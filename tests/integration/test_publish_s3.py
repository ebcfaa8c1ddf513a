"""s3:// publish and pull against a real S3 server (moto) on 127.0.0.1, started and stopped by each test."""

from __future__ import annotations

import uuid

import pytest

from builder.publish import publish_artifact
from builder.publish._artifact import PublishFailed, PublishRefused
from runtime import compat
from runtime.pull import IntegrityError, PullError, pull
from tests._publish import DEFAULT_FILES, make_artifact, moto_s3, tree_hashes

pytestmark = pytest.mark.s3

RANK0 = "checkpoint/rank0.safetensors"


@pytest.fixture
def s3(monkeypatch):
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    # Multipart for files >= 100 kB in 16 KiB parts (moto accepts parts >= 1 KiB here; real S3 needs 5 MiB).
    monkeypatch.setenv("TRTQ_S3_MULTIPART_THRESHOLD", "100000")
    monkeypatch.setenv("TRTQ_S3_PART_SIZE", str(16 * 1024))
    with moto_s3(monkeypatch, bucket) as srv:
        import boto3

        srv.bucket = bucket
        srv.client = boto3.client("s3")
        yield srv


def _keys(s3, prefix):
    return sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", []))


def test_round_trip_with_multipart_and_sha256_metadata(s3, tmp_path):
    art = make_artifact(tmp_path / "a")
    url = f"s3://{s3.bucket}/trtq/tiny"
    r = publish_artifact(art, url)
    assert r["uploaded"] == 4 and r["skipped"] == 0
    assert _keys(s3, "trtq/tiny/") == sorted(f"trtq/tiny/{k}" for k in [*DEFAULT_FILES, "manifest.json"])
    head = s3.client.head_object(Bucket=s3.bucket, Key=f"trtq/tiny/{RANK0}")
    assert head["ETag"].endswith('-11"')  # 179,200 bytes in 16 KiB parts: a real multipart object
    assert head["Metadata"]["sha256"] == make_artifact.__globals__["hashlib"].sha256(DEFAULT_FILES[RANK0]).hexdigest()
    got = pull(url, tmp_path / "got", machine=compat.Machine())
    assert got.files == 3 and tree_hashes(tmp_path / "got") == tree_hashes(
        art, skip=("resolve", ".lock", "checkpoint/.stage.json")
    )


def test_existing_prefix_is_refused_unless_forced(s3, tmp_path):
    url = f"s3://{s3.bucket}/trtq/tiny"
    publish_artifact(make_artifact(tmp_path / "a"), url)
    other = make_artifact(tmp_path / "b", {"checkpoint/config.json": b"{}"}, name="other")
    with pytest.raises(PublishRefused, match="already holds a published artifact"):
        publish_artifact(other, url)
    r = publish_artifact(other, url, force=True)
    assert r["files"] == 2
    assert _keys(s3, "trtq/tiny/") == ["trtq/tiny/checkpoint/config.json", "trtq/tiny/manifest.json"]  # strays deleted


def test_foreign_objects_under_the_prefix_are_refused(s3, tmp_path):
    s3.client.put_object(Bucket=s3.bucket, Key="data/x/notes.txt", Body=b"someone else's")
    with pytest.raises(PublishRefused, match="2 objects|1 objects that are not a trtq artifact"):
        publish_artifact(make_artifact(tmp_path / "a"), f"s3://{s3.bucket}/data/x")
    assert _keys(s3, "data/x/") == ["data/x/notes.txt"]


def test_server_dies_mid_upload_then_rerun_resumes(s3, tmp_path, monkeypatch):
    """The endpoint goes away after 4 of the 11 parts of rank0; the re-run sends only the 7 missing parts."""
    art = make_artifact(tmp_path / "a")
    url = f"s3://{s3.bucket}/trtq/tiny"
    from builder.publish import s3 as s3_publish

    sent_parts: list[int] = []
    real_client = s3_publish.client

    def counting_client(kill_after: int | None):
        def make():
            c = real_client()

            def after_part(params, **kw):
                sent_parts.append(params["PartNumber"])
                if kill_after is not None and len(sent_parts) == kill_after:
                    s3.stop()  # the server dies: the next request gets "connection refused"

            c.meta.events.register("before-parameter-build.s3.UploadPart", after_part)
            return c

        return make

    monkeypatch.setattr(s3_publish, "client", counting_client(kill_after=5))
    with pytest.raises(PublishFailed) as e:
        publish_artifact(art, url)
    assert "run the same publish again to resume" in str(e.value)
    assert len(sent_parts) == 5  # the 5th never arrived

    s3.start()  # same process, same moto backend: the 4 stored parts survived
    assert _keys(s3, "trtq/tiny/") == ["trtq/tiny/.trtq-publish.json", "trtq/tiny/checkpoint/config.json"]
    sent_parts.clear()
    monkeypatch.setattr(s3_publish, "client", counting_client(kill_after=None))
    seen: list[int] = []
    r = publish_artifact(art, url, progress=lambda n, total: seen.append(n))
    assert sum(seen) == r["bytes"]  # parts found already stored count as done
    assert sent_parts == list(range(5, 12))  # parts 1-4 reused (ETag = MD5 of our part), 5-11 sent
    assert r["skipped"] == 1  # config.json was complete before the crash
    assert ".trtq-publish.json" not in " ".join(_keys(s3, "trtq/tiny/"))
    got = pull(url, tmp_path / "got", machine=compat.Machine())
    assert (tmp_path / "got" / RANK0).read_bytes() == DEFAULT_FILES[RANK0] and got.files == 3


def test_tampered_object_fails_pull_and_deletes_partial(s3, tmp_path):
    url = f"s3://{s3.bucket}/trtq/tiny"
    publish_artifact(make_artifact(tmp_path / "a"), url)
    data = bytearray(DEFAULT_FILES[RANK0])
    data[-1] ^= 1
    s3.client.put_object(Bucket=s3.bucket, Key=f"trtq/tiny/{RANK0}", Body=bytes(data))
    with pytest.raises(IntegrityError, match=f"{RANK0}: sha256"):
        pull(url, tmp_path / "got", machine=compat.Machine())
    assert not (tmp_path / "got").exists() and not (tmp_path / ".got.partial").exists()


def test_interrupted_pull_resumes_with_a_range_request(s3, tmp_path, monkeypatch):
    url = f"s3://{s3.bucket}/trtq/tiny"
    publish_artifact(make_artifact(tmp_path / "a"), url)
    from runtime.stores import s3_store

    ranges: list[str] = []
    real = s3_store.client

    def recording():
        c = real()
        c.meta.events.register(
            "before-parameter-build.s3.GetObject", lambda params, **kw: ranges.append(params.get("Range"))
        )
        return c

    monkeypatch.setattr(s3_store, "client", recording)
    s3.stop()
    with pytest.raises(PullError, match="cannot reach the S3 endpoint|Could not connect"):
        pull(url, tmp_path / "got", machine=compat.Machine())
    s3.start()
    # An earlier pull got the manifest and half of rank0, then the connection dropped (simulated on disk).
    staging = tmp_path / ".got.partial"
    pull_state = staging / ".trtq-pull.json"
    import hashlib
    import json

    staging.mkdir(exist_ok=True)
    manifest = s3.client.get_object(Bucket=s3.bucket, Key="trtq/tiny/manifest.json")["Body"].read()
    pull_state.write_text(json.dumps({"manifest_sha256": hashlib.sha256(manifest).hexdigest()}))
    (staging / "checkpoint").mkdir(exist_ok=True)
    (staging / RANK0).write_bytes(DEFAULT_FILES[RANK0][:100_000])
    ranges.clear()
    r = pull(url, tmp_path / "got", machine=compat.Machine())
    assert "bytes=100000-" in ranges and r.resumed_files == 1
    assert (tmp_path / "got" / RANK0).read_bytes() == DEFAULT_FILES[RANK0]
