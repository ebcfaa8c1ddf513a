"""`oci://registry/repo:tag`: publish as an OCI artifact with ORAS (any OCI distribution registry).

Layout (read back by runtime.stores.oci_store, and by `oras pull`, which gives the same directory):
- artifactType application/vnd.trtq.artifact.v1; config = manifest.json (application/vnd.trtq.manifest.v1+json);
- one layer per file (application/vnd.trtq.file.v1), digest = the file's sha256, title annotation = its path,
  manifest.json last;
- manifest annotations: the manifest's facts (org.opencontainers.image.* and dev.trtq.*: format, quant_algo,
  tp/pp, GPU and compute capability, TensorRT-LLM/TensorRT/CUDA versions, source and commit) so a registry UI or
  `oras manifest fetch` tells whether it can run somewhere without downloading it.

Blobs already in the registry are not sent again (content-addressed), so a re-run after an interrupted publish
sends only the missing ones; the tag is written last. Refused without --force: a tag that already exists.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from builder.publish._artifact import Publishable, PublishFailed, PublishRefused
from runtime import compat
from runtime.locations import OciLocation
from runtime.stores.oci_store import (
    ARTIFACT_TYPE,
    AUTH_HINT,
    CONFIG_MEDIA_TYPE,
    FILE_MEDIA_TYPE,
    OCI_MANIFEST,
    TITLE,
    blob_url,
    manifest_url,
    registry,
    transport_errors,
)

log = logging.getLogger("trtq.publish")


def _chunk_size() -> int:
    """Files this large go up in chunks of this size (ORAS's plain PUT reads the whole file into memory)."""
    import os

    return int(os.environ.get("TRTQ_OCI_CHUNK_SIZE") or 16 << 20)


def annotations(art: Publishable) -> dict[str, str]:
    """The manifest's facts as OCI annotations (string values only, empty ones left out)."""
    m = art.manifest
    req = compat.requirements(m)
    src = m.source
    facts = {
        "org.opencontainers.image.title": m.name,
        "org.opencontainers.image.created": m.created,
        "org.opencontainers.image.description": f"trtq artifact {m.name}: {m.quantization.get('format')}, "
        f"tp {m.parallel.get('tp')} x pp {m.parallel.get('pp')}",
        "dev.trtq.schema_version": str(m.schema_version),
        "dev.trtq.status": m.status,
        "dev.trtq.trtq_version": m.trtq_version,
        "dev.trtq.format": m.quantization.get("format"),
        "dev.trtq.quant_algo": m.quantization.get("quant_algo"),
        "dev.trtq.kv_cache_quant_algo": m.quantization.get("kv_cache_quant_algo"),
        "dev.trtq.tp": m.parallel.get("tp"),
        "dev.trtq.pp": m.parallel.get("pp"),
        "dev.trtq.source": src.get("hub") or src.get("kind"),
        "dev.trtq.source_commit": src.get("commit"),
        "dev.trtq.engine": "true" if req.engine else "false",
        "dev.trtq.gpu": req.gpu_name,
        "dev.trtq.compute_capability": req.compute_capability,
        "dev.trtq.min_compute_capability": req.min_compute_capability,
        "dev.trtq.tensorrt_llm_version": req.tensorrt_llm,
        "dev.trtq.tensorrt_version": req.tensorrt,
        "dev.trtq.cuda_version": req.cuda,
        "dev.trtq.requires": req.summary(),
    }
    return {k: str(v) for k, v in facts.items() if v not in (None, "")}


def publish(
    art: Publishable, loc: OciLocation, *, force: bool, public: bool = False, progress: Callable[[int], None]
) -> dict[str, Any]:
    if loc.digest or not loc.tag:
        raise PublishRefused(f"{loc}: publish to a tag (oci://registry/repo:TAG), not a digest")
    reg = registry(loc)
    container = reg.get_container(f"{loc.registry}/{loc.repository}:{loc.tag}")
    uploaded = skipped = sent = 0
    chunk = _chunk_size()
    try:
        head = reg.do_request(manifest_url(reg, loc), "HEAD", headers={"Accept": OCI_MANIFEST})
        if head.status_code == 200 and not force:
            raise PublishRefused(f"{loc}: the tag already exists: choose another tag, or pass --force to move it")
        if head.status_code not in (200, 404):
            raise PublishFailed(f"{loc}: registry answered HTTP {head.status_code} to a tag lookup: {_auth_hint(head)}")
        layers = []
        for f in art.all_files:
            layer = {
                "mediaType": CONFIG_MEDIA_TYPE if f.rel == "manifest.json" else FILE_MEDIA_TYPE,
                "digest": f"sha256:{f.sha256}",
                "size": f.size,
                "annotations": {TITLE: f.rel},
            }
            layers.append(layer)
            if reg.do_request(blob_url(reg, loc, layer["digest"]), "HEAD").status_code == 200:
                skipped += 1
                progress(f.size)
                continue
            if f.size >= chunk:
                r = reg.chunked_upload(str(f.path), container, layer, chunk_size=chunk)
            else:
                r = reg.put_upload(str(f.path), container, layer)
            if r.status_code not in (200, 201, 202):
                raise PublishFailed(
                    f"{loc}: uploading {f.rel}: registry answered HTTP {r.status_code}: {_auth_hint(r)}"
                )
            uploaded += 1
            sent += f.size
            progress(f.size)
            log.info("uploaded %s (%d bytes)", f.rel, f.size)
        mf = art.manifest_file
        config = {"mediaType": CONFIG_MEDIA_TYPE, "digest": f"sha256:{mf.sha256}", "size": mf.size}
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": config,
            "layers": layers,
            "annotations": annotations(art),
        }
        body = json.dumps(manifest, sort_keys=True).encode()
        r = reg.do_request(manifest_url(reg, loc, loc.tag), "PUT", data=body, headers={"Content-Type": OCI_MANIFEST})
        if r.status_code not in (200, 201):
            raise PublishFailed(f"{loc}: writing the tag: registry answered HTTP {r.status_code}: {_auth_hint(r)}")
        digest = r.headers.get("Docker-Content-Digest")
    except ValueError as e:  # ORAS: an upload session the registry did not open (refused, or not a registry)
        raise PublishFailed(f"{loc}: {str(e).splitlines()[0]}") from None
    except transport_errors() as e:
        raise PublishFailed(
            f"{loc}: connection to the registry lost ({type(e).__name__}): the blobs uploaded so far are kept; "
            "run the same publish again to resume"
        ) from None
    return {
        "uploaded": uploaded,
        "skipped": skipped,
        "uploaded_bytes": sent,
        "location": f"oci://{loc.registry}/{loc.repository}@{digest}" if digest else str(loc),
        "revision": digest,
    }


def _auth_hint(r) -> str:
    if r.status_code in (401, 403):
        return AUTH_HINT
    try:
        errors = r.json().get("errors") or []
        return "; ".join(str(e.get("message", e)) for e in errors) or r.reason
    except ValueError:
        return r.reason or "?"
