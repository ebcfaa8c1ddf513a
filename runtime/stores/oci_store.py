"""`oci://registry/repo:tag`: an artifact as an OCI artifact (one layer per file), read with ORAS (`oras` package).

Layout written by `builder.publish.oci`: the OCI manifest's config blob is the trtq `manifest.json`
(media type application/vnd.trtq.manifest.v1+json); each file is one layer whose digest is the file's sha256 and whose
`org.opencontainers.image.title` annotation is its path in the artifact (so `oras pull` gives the same directory).
Credentials: ~/.docker/config.json (or $DOCKER_CONFIG) as `docker login`/`oras login` write it, or ORAS_USER/ORAS_PASS.
Registries on localhost/127.0.0.1 are spoken to over plain HTTP, all others over HTTPS.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from runtime.locations import OciLocation
from runtime.stores import CHUNK, MANIFEST, Progress, StoreError, require, resume_offset

ARTIFACT_TYPE = "application/vnd.trtq.artifact.v1"
CONFIG_MEDIA_TYPE = "application/vnd.trtq.manifest.v1+json"
FILE_MEDIA_TYPE = "application/vnd.trtq.file.v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TITLE = "org.opencontainers.image.title"
AUTH_HINT = (
    "the registry refused access: log in (oras login / docker login write ~/.docker/config.json), "
    "or set ORAS_USER and ORAS_PASS"
)


def registry(location: OciLocation) -> Any:
    """An ORAS registry client for ``location``: short retries, and both registry auth schemes.

    ORAS's own request loop waits minutes on a dead server and only speaks Bearer-token auth; registries with
    htpasswd (Basic) auth, as docker-registry, need Basic credentials sent with every request.
    """
    require("oras", "oci")
    import oras.provider
    import requests

    class _Registry(oras.provider.Registry):
        attempts = max(1, int(os.environ.get("TRTQ_OCI_ATTEMPTS", "3")))
        basic: str | None = None  # set once the registry asked for Basic auth and we hold credentials

        def do_request(self, url, method="GET", data=None, headers=None, json=None, stream=False):
            headers = dict(headers or {})
            for attempt in range(self.attempts):
                try:
                    return self._authenticated(url, method, data, headers, json, stream)
                except requests.exceptions.ConnectionError:
                    if attempt + 1 == self.attempts:
                        raise
                    time.sleep(0.5 * 2**attempt)
            raise AssertionError("unreachable")

        def _send(self, url, method, data, headers, json, stream):
            if self.basic:
                headers["Authorization"] = f"Basic {self.basic}"
            elif getattr(self.auth, "token", None):
                headers.update(self.auth.get_auth_header())
            return self.session.request(
                method, url, data=data, json=json, headers=headers, stream=stream, verify=self._tls_verify
            )

        def _authenticated(self, url, method, data, headers, json, stream):
            r = self._send(url, method, data, headers, json, stream)
            if r.status_code != 401:
                return r
            challenge = r.headers.get("Www-Authenticate", "")
            if challenge.lower().startswith("basic"):
                creds = getattr(self.auth, "_basic_auth", None)
                if not creds or self.basic:
                    return r  # no credentials, or they were refused: the caller reports the 401
                self.basic = creds
                return self._send(url, method, data, headers, json, stream)
            headers, changed = self.auth.authenticate_request(r, headers)  # Bearer: ORAS fetches a token
            if not changed:
                return r
            return self._send(url, method, data, headers, json, stream)

    reg = _Registry(hostname=location.registry, insecure=location.plain_http)
    container = reg.get_container(f"{location.registry}/{location.repository}:{location.tag or 'latest'}")
    # Docker's own lookup: $DOCKER_CONFIG/config.json, else ~/.docker/config.json (ORAS reads only the latter).
    docker_dir = os.environ.get("DOCKER_CONFIG")
    configs = [os.path.join(docker_dir, "config.json")] if docker_dir else None
    if configs and not os.path.exists(configs[0]):
        configs = None
    reg.auth.load_configs(container, configs=configs)
    user, password = os.environ.get("ORAS_USER"), os.environ.get("ORAS_PASS")
    if user and password:
        reg.auth.set_basic_auth(user, password)
    return reg


def manifest_url(reg: Any, location: OciLocation, reference: str | None = None) -> str:
    return f"{reg.prefix}://{location.registry}/v2/{location.repository}/manifests/{reference or location.reference}"


def blob_url(reg: Any, location: OciLocation, digest: str) -> str:
    return f"{reg.prefix}://{location.registry}/v2/{location.repository}/blobs/{digest}"


def transport_errors() -> tuple[type[Exception], ...]:
    import requests

    return (requests.exceptions.RequestException, ValueError)


class OciStore:
    def __init__(self, location: OciLocation):
        self.loc = location
        self.reg = registry(location)
        self.resolved: str | None = None
        self.layers: dict[str, dict[str, Any]] = {}

    def _get(self, url: str, what: str, headers: dict[str, str] | None = None, stream: bool = False):
        try:
            r = self.reg.do_request(url, "GET", headers=dict(headers or {}), stream=stream)
        except transport_errors() as e:
            raise StoreError(f"{self.loc}: cannot reach the registry ({type(e).__name__}): {what}") from None
        if r.status_code == 404:
            raise StoreError(f"{self.loc}: {what} not found in the registry")
        if r.status_code in (401, 403):
            raise StoreError(f"{self.loc}: {what}: {AUTH_HINT}")
        if r.status_code not in (200, 206):
            raise StoreError(f"{self.loc}: {what}: registry answered HTTP {r.status_code}")
        return r

    def manifest_bytes(self) -> bytes:
        r = self._get(manifest_url(self.reg, self.loc), "the tag", {"Accept": OCI_MANIFEST})
        oci = r.json()
        self.resolved = r.headers.get("Docker-Content-Digest")
        config = oci.get("config") or {}
        if config.get("mediaType") != CONFIG_MEDIA_TYPE:
            raise StoreError(f"{self.loc}: not a trtq artifact (config media type {config.get('mediaType')!r})")
        for layer in oci.get("layers", []):
            title = (layer.get("annotations") or {}).get(TITLE)
            if title:
                self.layers[title] = layer
        data = self._get(blob_url(self.reg, self.loc, config["digest"]), MANIFEST).content
        import hashlib

        if "sha256:" + hashlib.sha256(data).hexdigest() != config["digest"]:
            raise StoreError(
                f"{self.loc}: {MANIFEST} does not match its digest {config['digest']}: the registry is damaged"
            )
        json.loads(data)  # must be JSON; pull validates the schema
        return data

    def fetch(self, rel: str, size: int, dest: Path, progress: Progress | None = None) -> None:
        layer = self.layers.get(rel)
        if layer is None:
            raise StoreError(f"{self.loc}: {rel} is listed in {MANIFEST} but is no layer of the OCI artifact")
        offset = resume_offset(dest, size)
        if offset == size:
            return
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        r = self._get(blob_url(self.reg, self.loc, layer["digest"]), rel, headers, stream=True)
        mode = "ab" if r.status_code == 206 else "wb"  # a registry that ignores Range sends the whole blob
        try:
            with r, open(dest, mode) as f:
                for chunk in r.iter_content(CHUNK):
                    f.write(chunk)
                    if progress:
                        progress(len(chunk))
        except transport_errors() as e:
            raise StoreError(f"{self.loc}: connection lost while reading {rel} ({type(e).__name__})") from None


def open_store(location: OciLocation) -> OciStore:
    return OciStore(location)
