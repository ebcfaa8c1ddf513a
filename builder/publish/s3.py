"""`s3://bucket/prefix`: publish as objects under a prefix with boto3 (AWS S3 and S3-compatible servers).

- Each object carries its sha256 in metadata (`x-amz-meta-sha256`); an object already there with the right size
  and sha256 is not sent again, so a re-run after an interrupted publish only sends what is missing.
- Files from TRTQ_S3_MULTIPART_THRESHOLD (default 64 MiB) up go as multipart uploads of TRTQ_S3_PART_SIZE
  (default 64 MiB; S3 wants >= 5 MiB) parts, each with Content-MD5. An interrupted multipart upload is resumed:
  the parts already stored whose ETag equals the MD5 of our part are kept.
- `PREFIX/.trtq-publish.json` marks a publish in progress; manifest.json is written last and the marker removed,
  so a prefix with a manifest.json holds a complete artifact. Refused without --force: a prefix holding a
  manifest.json, or objects that are not an interrupted trtq publish. With --force, stray objects are deleted.
- Credentials/endpoint: boto3's default chain (see runtime.stores.s3_store).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from builder.publish._artifact import Publishable, PublishFailed, PublishFile, PublishRefused
from runtime.locations import S3Location
from runtime.manifest import FILENAME
from runtime.stores.s3_store import client, client_errors, describe_error

log = logging.getLogger("trtq.publish")

MARKER = ".trtq-publish.json"
_MIB = 1 << 20


def _size_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise PublishRefused(f"{name}={raw!r}: not a number of bytes") from None


def publish(
    art: Publishable, loc: S3Location, *, force: bool, public: bool = False, progress: Callable[[int], None]
) -> dict[str, Any]:
    s3 = client()
    threshold = _size_env("TRTQ_S3_MULTIPART_THRESHOLD", 64 * _MIB)
    part_size = _size_env("TRTQ_S3_PART_SIZE", 64 * _MIB)
    try:
        existing = _list(s3, loc)
        manifest_key = loc.key(FILENAME)
        if not force:
            if manifest_key in existing:
                raise PublishRefused(
                    f"{loc} already holds a published artifact ({FILENAME}): pass --force to overwrite it"
                )
            if existing and loc.key(MARKER) not in existing:
                raise PublishRefused(
                    f"{loc} already holds {len(existing)} objects that are not a trtq artifact: choose another prefix, "
                    "or pass --force to replace them"
                )
        if manifest_key in existing:  # --force over a complete artifact: it is incomplete from now on
            s3.delete_object(Bucket=loc.bucket, Key=manifest_key)
        marker = _Marker(s3, loc, art, resume=loc.key(MARKER) in existing)
        marker.save()
        uploaded = skipped = sent = 0
        for f in art.files:
            key = loc.key(f.rel)
            if key in existing and existing[key] == f.size and _stored_sha(s3, loc.bucket, key) == f.sha256:
                skipped += 1
                log.debug("%s: already uploaded", f.rel)
                progress(f.size)
                continue
            if f.size >= threshold:
                sent += _multipart(s3, loc.bucket, key, f, part_size, marker, progress)
            else:
                with open(f.path, "rb") as body:
                    s3.put_object(
                        Bucket=loc.bucket,
                        Key=key,
                        Body=body,
                        ContentMD5=_md5_file(f),
                        Metadata={"sha256": f.sha256},
                    )
                sent += f.size
                progress(f.size)
            uploaded += 1
            log.info("uploaded %s (%d bytes)", f.rel, f.size)
        keep = {loc.key(f.rel) for f in art.all_files} | {loc.key(MARKER)}
        strays = [k for k in existing if k not in keep]
        for i in range(0, len(strays), 1000):
            s3.delete_objects(Bucket=loc.bucket, Delete={"Objects": [{"Key": k} for k in strays[i : i + 1000]]})
        m = art.manifest_file
        s3.put_object(
            Bucket=loc.bucket,
            Key=manifest_key,
            Body=art.manifest_bytes,
            ContentMD5=base64.b64encode(hashlib.md5(art.manifest_bytes, usedforsecurity=False).digest()).decode(),
            ContentType="application/json",
            Metadata={"sha256": m.sha256},
        )
        s3.delete_object(Bucket=loc.bucket, Key=loc.key(MARKER))
        progress(m.size)
    except client_errors() as e:
        raise PublishFailed(
            describe_error(e, str(loc)) + ": the objects uploaded so far are kept; run the same publish again to resume"
        ) from None
    return {
        "uploaded": uploaded + 1,
        "skipped": skipped,
        "uploaded_bytes": sent + m.size,
        "location": f"s3://{loc.bucket}/{manifest_key}",
        "revision": None,
    }


def _list(s3, loc: S3Location) -> dict[str, int]:
    """Every object under the prefix (key -> size)."""
    out: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.prefix + "/"):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["Size"]
    return out


def _stored_sha(s3, bucket: str, key: str) -> str | None:
    return s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get("sha256")


def _md5_file(f: PublishFile) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(f.path, "rb") as fh:
        while chunk := fh.read(_MIB):
            h.update(chunk)
    return base64.b64encode(h.digest()).decode()


class _Marker:
    """`PREFIX/.trtq-publish.json`: a publish in progress, and the multipart uploads it started (key -> id, sha256)."""

    def __init__(self, s3, loc: S3Location, art: Publishable, resume: bool):
        self.s3, self.loc = s3, loc
        previous: dict[str, Any] = {}
        if resume:
            try:
                previous = json.loads(s3.get_object(Bucket=loc.bucket, Key=loc.key(MARKER))["Body"].read())
            except client_errors():
                previous = {}
            except ValueError:
                previous = {}
        self.state = {
            "name": art.manifest.name,
            "manifest_sha256": art.manifest_file.sha256,
            "uploads": dict(previous.get("uploads") or {}),
        }

    def save(self) -> None:
        body = json.dumps(self.state, sort_keys=True).encode()
        self.s3.put_object(Bucket=self.loc.bucket, Key=self.loc.key(MARKER), Body=body, ContentType="application/json")


def _multipart(
    s3, bucket: str, key: str, f: PublishFile, part_size: int, marker: _Marker, progress: Callable[[int], None]
) -> int:
    """Upload ``f`` in parts, reusing the stored parts of an interrupted upload of this same file. Returns bytes sent."""
    upload_id, stored = _resume_point(s3, bucket, key, f.sha256, marker)
    if upload_id is None:
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"sha256": f.sha256})["UploadId"]
        marker.state["uploads"][key] = {"upload_id": upload_id, "sha256": f.sha256}
        marker.save()
    parts, sent, kept = [], 0, 0
    with open(f.path, "rb") as fh:
        number = 0
        while chunk := fh.read(part_size):
            number += 1
            md5 = hashlib.md5(chunk, usedforsecurity=False)
            etag = f'"{md5.hexdigest()}"'
            if stored.get(number) == (etag, len(chunk)):
                parts.append({"PartNumber": number, "ETag": etag})
                kept += 1
                progress(len(chunk))
                continue
            r = s3.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=chunk,
                ContentMD5=base64.b64encode(md5.digest()).decode(),
            )
            parts.append({"PartNumber": number, "ETag": r["ETag"]})
            sent += len(chunk)
            progress(len(chunk))
    if kept:
        log.info("%s: resumed its multipart upload: %d of %d parts were already stored", f.rel, kept, number)
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    marker.state["uploads"].pop(key, None)
    return sent


def _resume_point(
    s3, bucket: str, key: str, sha256: str, marker: _Marker
) -> tuple[str | None, dict[int, tuple[str, int]]]:
    """The unfinished multipart upload of ``key`` that the marker says was started for this same file, and its parts."""
    known = marker.state["uploads"].get(key) or {}
    pending = [
        u["UploadId"]
        for u in s3.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
        if u["Key"] == key
    ]
    resume = known.get("upload_id") if known.get("sha256") == sha256 and known.get("upload_id") in pending else None
    for upload_id in pending:
        if upload_id != resume:  # started for another version of the file, or by someone else's failed upload
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    if resume is None:
        return None, {}
    stored: dict[int, tuple[str, int]] = {}
    for page in s3.get_paginator("list_parts").paginate(Bucket=bucket, Key=key, UploadId=resume):
        for p in page.get("Parts", []):
            stored[p["PartNumber"]] = (p["ETag"], p["Size"])
    return resume, stored
