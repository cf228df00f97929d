"""Identity resolution order: settings, environment (container image digest), bake-time file, cloud
metadata (short timeout, cached per boot), then os-release."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from collectors.identity import image_from_env, resolve_identity
from collectors.settings import CollectorSettings
from herdwatch.kafka_local import free_port


class FakeImds(BaseHTTPRequestHandler):
    """An AWS IMDSv2 look-alike on localhost."""

    requests: list[str] = []

    def do_PUT(self) -> None:
        FakeImds.requests.append(self.path)
        self._send(b"token-1" if self.path == "/latest/api/token" else None)

    def do_GET(self) -> None:
        FakeImds.requests.append(self.path)
        ok = self.headers.get("X-aws-ec2-metadata-token") == "token-1"
        doc = {"instanceId": "i-0abc", "imageId": "ami-0fam", "region": "eu-west-1",
               "availabilityZone": "eu-west-1a", "instanceType": "t3.micro"}
        self._send(json.dumps(doc).encode() if ok and "instance-identity" in self.path else None)

    def _send(self, body: bytes | None) -> None:
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        if body is not None:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def imds() -> Iterator[str]:
    FakeImds.requests = []
    server = HTTPServer(("127.0.0.1", 0), FakeImds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def settings(tmp_path: Path, fake_root: Path, **kw: object) -> CollectorSettings:
    values: dict[str, object] = {"state_dir": tmp_path / "state", "root": fake_root,
                                 "image_file": tmp_path / "image.json",
                                 "cloud_metadata_url": f"http://127.0.0.1:{free_port()}"}
    values.update(kw)
    return CollectorSettings(**values)  # type: ignore[arg-type]


def test_explicit_settings_win(tmp_path: Path, fake_root: Path, imds: str) -> None:
    s = settings(tmp_path, fake_root, host_id="h-1", image_id="ami-set", image_family="fam-set",
                 cloud_metadata_url=imds)
    ident = resolve_identity(s, env={"CONTAINER_IMAGE_DIGEST": "sha256:abc"})
    assert (ident.host.host_id, ident.host.image_id, ident.host.image_family) == ("h-1", "ami-set", "fam-set")
    assert FakeImds.requests == []  # nothing to ask the metadata endpoint
    assert len(ident.host.boot_id) >= 8 and ident.boot_time > 0


def test_container_image_digest_from_environment(tmp_path: Path, fake_root: Path) -> None:
    env = {"CONTAINER_IMAGE": "registry.example/team/api:1.4@sha256:feed", "POD_NAME": "api-7d9"}
    ident = resolve_identity(settings(tmp_path, fake_root, host_id="h"), env=env)
    assert (ident.host.image_id, ident.host.image_family) == ("sha256:feed", "registry.example/team/api")
    assert ident.host.tags["container.pod"] == "api-7d9" and ident.sources["image_id"] == "env"
    assert image_from_env({"CONTAINER_IMAGE": "nginx:1.25"}) is None  # a tag alone is not an identity


def test_bake_time_file_then_cloud_metadata(tmp_path: Path, fake_root: Path, imds: str) -> None:
    s = settings(tmp_path, fake_root, cloud_metadata_url=imds)
    (tmp_path / "image.json").write_text('{"image_id": "ami-baked", "image_family": "web"}')
    ident = resolve_identity(s, env={})
    assert (ident.host.image_id, ident.host.image_family) == ("ami-baked", "web")
    assert ident.host.host_id == "i-0abc" and ident.host.tags["cloud.region"] == "eu-west-1"

    (tmp_path / "image.json").write_text("IMAGE_ID=ami-kv\nIMAGE_FAMILY=\"batch\"\n")
    assert resolve_identity(s, env={}).host.image_id == "ami-kv"

    (tmp_path / "image.json").unlink()
    asked = len(FakeImds.requests)
    ident = resolve_identity(s, env={})
    assert ident.host.image_id == "ami-0fam" and ident.sources["image_id"] == "cloud"
    assert len(FakeImds.requests) == asked  # answered from the per-boot cache


def test_no_metadata_endpoint_falls_back_quickly(tmp_path: Path, fake_root: Path) -> None:
    (fake_root / "etc/machine-id").write_text("0123456789abcdef\n")
    ident = resolve_identity(settings(tmp_path, fake_root, cloud_metadata_timeout_s=0.2), env={})
    assert ident.host.host_id == "0123456789abcdef" and ident.host.image_id == "os:debian-12"
    assert ident.host.image_family == "debian" and ident.host.tags.get("cloud.provider") is None
    (fake_root / "etc/machine-id").unlink()
    again = resolve_identity(settings(tmp_path, fake_root), env={})
    assert again.sources["host_id"] == "state" and again.host.host_id == "0123456789abcdef"
    assert again.first_seen == ident.first_seen  # host age counts from the first time seen
