"""`s3://bucket/prefix`: an artifact as objects under a prefix, read with boto3.

Credentials and endpoint come from boto3's default chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN, AWS_PROFILE and ~/.aws, AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) for S3-compatible servers
(MinIO, moto, ...), AWS_MAX_ATTEMPTS for retries. trtq never reads or prints them itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.locations import S3Location
from runtime.stores import CHUNK, MANIFEST, Progress, StoreError, require, resume_offset


def client() -> Any:
    """A boto3 S3 client from the default credential/config chain."""
    boto3 = require("boto3", "s3")
    from botocore.config import Config

    return boto3.session.Session().client("s3", config=Config(retries={"mode": "standard"}))


def describe_error(e: Exception, where: str) -> str:
    """One line for a boto3/botocore error, without request signatures or credentials."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        code = err.get("Code", "?")
        hint = {
            "NoSuchBucket": "create the bucket first, or check the bucket name",
            "AccessDenied": "check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, ~/.aws) and the bucket policy",
            "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID / AWS_PROFILE",
            "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY / AWS_PROFILE",
        }.get(code, "")
        return f"{where}: {code}: {err.get('Message', '')}".rstrip(": ") + (f": {hint}" if hint else "")
    if isinstance(e, NoCredentialsError):
        return f"{where}: no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if isinstance(e, EndpointConnectionError):
        return f"{where}: cannot reach the S3 endpoint ({e.kwargs.get('endpoint_url', '?')})"
    return f"{where}: {type(e).__name__}: {e}"


def client_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


class S3Store:
    def __init__(self, location: S3Location):
        self.loc = location
        self.client = client()
        self.resolved = None

    def manifest_bytes(self) -> bytes:
        key = self.loc.key(MANIFEST)
        try:
            obj = self.client.get_object(Bucket=self.loc.bucket, Key=key)
            body = obj["Body"].read()
        except client_errors() as e:
            code = getattr(e, "response", {}).get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise StoreError(
                    f"{self.loc}: no {MANIFEST}: nothing published there (or the upload never finished)"
                ) from None
            raise StoreError(describe_error(e, str(self.loc))) from None
        self.resolved = obj.get("VersionId") or (obj.get("ETag") or "").strip('"') or None
        return body

    def fetch(self, rel: str, size: int, dest: Path, progress: Progress | None = None) -> None:
        offset = resume_offset(dest, size)
        if offset == size:
            return
        try:
            try:
                obj = self.client.get_object(Bucket=self.loc.bucket, Key=self.loc.key(rel), Range=f"bytes={offset}-")
            except client_errors() as e:
                if offset == 0 or getattr(e, "response", {}).get("Error", {}).get("Code") != "InvalidRange":
                    raise
                # The stored object is shorter than our partial file: it changed; start this file over.
                dest.unlink()
                obj = self.client.get_object(Bucket=self.loc.bucket, Key=self.loc.key(rel))
            with open(dest, "ab") as f:
                for chunk in obj["Body"].iter_chunks(CHUNK):
                    f.write(chunk)
                    if progress:
                        progress(len(chunk))
        except client_errors() as e:
            raise StoreError(describe_error(e, f"{self.loc}: {rel}")) from None


def open_store(location: S3Location) -> S3Store:
    return S3Store(location)
