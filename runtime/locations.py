"""Where an artifact is published to, or pulled from: `hf://`, `s3://`, `oci://` and `file://` URLs.

Both sides use this module (`builder.publish` writes to a location, `runtime.pull` reads from one), so a URL means
the same thing to both. Credentials never go in a URL: each service takes them from its usual environment/config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import UsageError

SCHEMES = ("hf", "s3", "oci", "file")
# Registries on the local machine speak plain HTTP (as docker and oras do for localhost); everything else is HTTPS.
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class LocationError(UsageError, ValueError):
    """A URL that does not name a place trtq can publish to or pull from. The message says how to write it."""


@dataclass(frozen=True)
class HfLocation:
    repo_id: str  # org/name
    revision: str | None  # a branch (publish) or a branch/tag/commit (pull); None means the default branch

    scheme = "hf"

    def __str__(self) -> str:
        return f"hf://{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # no leading or trailing "/"

    scheme = "s3"

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class OciLocation:
    registry: str  # host[:port]
    repository: str  # path/name
    tag: str | None
    digest: str | None = None  # sha256:... (pull only)

    scheme = "oci"

    @property
    def plain_http(self) -> bool:
        host = (
            self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else self.registry.split("]")[0] + "]"
        )
        return host in _LOCAL_HOSTS

    @property
    def reference(self) -> str:
        """What the registry API calls the manifest: the digest if given, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        ref = f"@{self.digest}" if self.digest else f":{self.tag}"
        return f"oci://{self.registry}/{self.repository}{ref}"


@dataclass(frozen=True)
class FileLocation:
    path: Path

    scheme = "file"

    def __str__(self) -> str:
        return f"file://{self.path}"


Location = HfLocation | S3Location | OciLocation | FileLocation

_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_OCI_REPO = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_OCI_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_location(url: str) -> Location:
    """Parse ``url`` into a location, or raise LocationError saying what is wrong and how to write it."""
    m = re.match(r"^([a-z0-9]+)://(.*)$", url or "")
    if not m or m.group(1) not in SCHEMES:
        raise LocationError(
            f"'{url}' is not an artifact URL: use hf://org/name[@branch], s3://bucket/prefix, "
            "oci://registry/repo:tag or file:///path"
        )
    scheme, rest = m.groups()
    if scheme != "file" and "@" in rest.split("/", 1)[0]:
        raise LocationError(
            f"'{_redact(url)}': credentials do not go in the URL; trtq reads them from the service's own environment "
            "and config (HF_TOKEN or `hf auth login`; AWS_* or ~/.aws; ~/.docker/config.json or ORAS_USER/ORAS_PASS)"
        )
    return {"hf": _hf, "s3": _s3, "oci": _oci, "file": _file}[scheme](url, rest)


def _hf(url: str, rest: str) -> HfLocation:
    repo, _, revision = rest.partition("@")
    parts = repo.strip("/").split("/")
    if len(parts) != 2 or not all(_REPO_PART.match(p) for p in parts):
        raise LocationError(f"'{url}': a Hugging Face URL names a repository: hf://org/name[@branch]")
    if "@" in rest and not revision:
        raise LocationError(f"'{url}': empty revision after '@': write hf://org/name@branch, or leave '@' out")
    return HfLocation("/".join(parts), revision or None)


def _s3(url: str, rest: str) -> S3Location:
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.match(bucket):
        raise LocationError(f"'{url}': '{bucket}' is not an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
    if not prefix:
        raise LocationError(
            f"'{url}': name a prefix for the artifact: s3://{bucket}/PREFIX (an artifact is many files)"
        )
    if any(p in ("", ".", "..") for p in prefix.split("/")):
        raise LocationError(f"'{url}': the prefix may not contain empty, '.' or '..' parts")
    return S3Location(bucket, prefix)


def _oci(url: str, rest: str) -> OciLocation:
    registry, _, path = rest.partition("/")
    digest = None
    if "@" in path:
        path, _, digest = path.partition("@")
        if not _DIGEST.match(digest):
            raise LocationError(f"'{url}': '{digest}' is not a digest: write @sha256:<64 hex digits>")
    repository, tag = path, None
    if ":" in path.rsplit("/", 1)[-1]:
        repository, _, tag = path.rpartition(":")
    if not registry or not repository:
        raise LocationError(f"'{url}': write oci://registry[:port]/repository:tag")
    if not _OCI_REPO.match(repository):
        raise LocationError(
            f"'{url}': '{repository}' is not an OCI repository name (lowercase letters, digits, '.', '_', '-', '/')"
        )
    if tag is not None and not _OCI_TAG.match(tag):
        raise LocationError(f"'{url}': '{tag}' is not an OCI tag (letters, digits, '.', '_', '-'; at most 128)")
    if tag is None and digest is None:
        raise LocationError(f"'{url}': name a tag: oci://{registry}/{repository}:TAG")
    return OciLocation(registry, repository, tag, digest)


def _file(url: str, rest: str) -> FileLocation:
    if not rest or rest == "/":
        raise LocationError(f"'{url}': name a directory: file:///path/to/dir")
    return FileLocation(Path(rest).expanduser().absolute())


def _redact(url: str) -> str:
    """``url`` with anything before '@' in its authority replaced, so an error message never echoes a secret."""
    return re.sub(r"^([a-z0-9]+://)[^/@]*@", r"\1***@", url)
