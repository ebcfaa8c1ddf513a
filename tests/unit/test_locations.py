"""Artifact URLs: every scheme parses to what publish and pull will use; mistakes say how to write them."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.locations import FileLocation, HfLocation, LocationError, OciLocation, S3Location, parse_location


@pytest.mark.parametrize(
    "url, expected",
    [
        ("hf://my-org/smollm2-fp8", HfLocation("my-org/smollm2-fp8", None)),
        ("hf://my-org/smollm2-fp8@tp2", HfLocation("my-org/smollm2-fp8", "tp2")),
        ("s3://models/trtq/smollm2/", S3Location("models", "trtq/smollm2")),
        ("oci://ghcr.io/me/smollm2:fp8", OciLocation("ghcr.io", "me/smollm2", "fp8")),
        ("oci://127.0.0.1:5000/trtq/tiny:v1", OciLocation("127.0.0.1:5000", "trtq/tiny", "v1")),
        ("oci://r.io/a/b@sha256:" + "0" * 64, OciLocation("r.io", "a/b", None, "sha256:" + "0" * 64)),
        ("file:///srv/models/x", FileLocation(Path("/srv/models/x"))),
    ],
)
def test_parse(url, expected):
    loc = parse_location(url)
    assert loc == expected
    assert loc.scheme == url.split(":", 1)[0]


def test_local_registries_speak_plain_http_others_https():
    assert parse_location("oci://127.0.0.1:5000/a/b:t").plain_http
    assert parse_location("oci://localhost:5000/a/b:t").plain_http
    assert not parse_location("oci://ghcr.io/a/b:t").plain_http
    assert not parse_location("oci://127.0.0.1.evil.io/a/b:t").plain_http


@pytest.mark.parametrize(
    "url, says",
    [
        ("ftp://x/y", "use hf://org/name[@branch], s3://bucket/prefix"),
        ("hf://justname", "hf://org/name[@branch]"),
        ("hf://a/b/c", "hf://org/name[@branch]"),
        ("hf://a/b@", "empty revision"),
        ("s3://models", "name a prefix"),
        ("s3://Bad_Bucket/x", "not an S3 bucket name"),
        ("s3://models/a/../b", "'..'"),
        ("oci://ghcr.io/me/model", "name a tag: oci://ghcr.io/me/model:TAG"),
        ("oci://ghcr.io/Me/Model:t", "not an OCI repository name"),
        ("oci://ghcr.io/me/m@sha256:12", "not a digest"),
        ("file://", "name a directory"),
    ],
)
def test_mistakes_say_how_to_write_it(url, says):
    with pytest.raises(LocationError, match=None) as e:
        parse_location(url)
    assert says in str(e.value)


@pytest.mark.parametrize(
    "url", ["s3://AKIA:secretvalue@bucket/p", "oci://me:secretvalue@ghcr.io/a/b:t", "hf://tok:secretvalue@a/b"]
)
def test_credentials_in_urls_are_refused_and_never_echoed(url):
    with pytest.raises(LocationError) as e:
        parse_location(url)
    assert "credentials do not go in the URL" in str(e.value)
    assert "secretvalue" not in str(e.value)
