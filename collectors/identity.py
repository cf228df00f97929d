"""Who this host is: host_id, boot_id, boot time, image_id and image_family, plus cloud/container tags.

image_id/image_family come from, in order: explicit settings, the environment (container image digest),
a file written at image bake time, the cloud instance metadata endpoint (short timeout), and finally
/etc/os-release. Metadata answers are cached in the state dir for the current boot, so an agent restart
does not ask again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from collectors.safe import clean, read_text
from collectors.settings import CollectorSettings
from collectors.state import read_json, write_json
from contract.events import HostIdentity, safe_id

IMAGE_ENV = ("CONTAINER_IMAGE_DIGEST", "HERDWATCH_CONTAINER_IMAGE_DIGEST")
IMAGE_NAME_ENV = ("CONTAINER_IMAGE", "HERDWATCH_CONTAINER_IMAGE")


@dataclass
class Identity:
    host: HostIdentity
    boot_time: float
    hostname: str
    first_seen: float
    sources: dict[str, str] = field(default_factory=dict)
    """Where host_id and image_id came from (settings, env, image_file, cloud, machine-id, os-release)."""


def _get(url: str, timeout: float, headers: Mapping[str, str], method: str = "GET") -> str:
    req = urllib.request.Request(url, headers=dict(headers), method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return str(resp.read(65536).decode("utf-8", "replace"))


def cloud_metadata(base: str, timeout: float) -> dict[str, str] | None:
    """instance_id, image_id, region, ... from AWS (IMDSv2), GCP or Azure; None when there is no endpoint.

    An unreachable endpoint costs at most `timeout` once: the providers share one address.
    """
    try:
        ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        token = _get(f"{base}/latest/api/token", timeout, ttl, "PUT")
    except urllib.error.HTTPError:
        token = None
    except (OSError, ValueError):
        return None  # no endpoint at all (refused, timed out, no route)
    try:
        if token is not None:
            h = {"X-aws-ec2-metadata-token": token}
            doc = json.loads(_get(f"{base}/latest/dynamic/instance-identity/document", timeout, h))
            return {"provider": "aws", "instance_id": doc.get("instanceId", ""),
                    "image_id": doc.get("imageId", ""),
                    "region": doc.get("region", ""), "zone": doc.get("availabilityZone", ""),
                    "instance_type": doc.get("instanceType", "")}
    except (OSError, ValueError):
        pass
    try:
        doc = json.loads(_get(f"{base}/computeMetadata/v1/instance/?recursive=true", timeout,
                              {"Metadata-Flavor": "Google"}))
        image = str(doc.get("image", ""))
        return {"provider": "gcp", "instance_id": str(doc.get("id", "")), "image_id": image,
                "image_family": image.rsplit("/", 1)[-1].rsplit("-v", 1)[0] if image else "",
                "zone": str(doc.get("zone", "")).rsplit("/", 1)[-1],
                "instance_type": str(doc.get("machineType", "")).rsplit("/", 1)[-1]}
    except (OSError, ValueError):
        pass
    try:
        url = f"{base}/metadata/instance?api-version=2021-02-01"
        doc = json.loads(_get(url, timeout, {"Metadata": "true"}))
        compute = doc.get("compute", {})
        ref = compute.get("storageProfile", {}).get("imageReference", {})
        parts = ("publisher", "offer", "sku", "version")
        image = ref.get("id") or ":".join(str(ref.get(k, "")) for k in parts)
        return {"provider": "azure", "instance_id": compute.get("vmId", ""), "image_id": image,
                "image_family": ":".join(str(ref.get(k, "")) for k in ("publisher", "offer", "sku")),
                "region": compute.get("location", ""), "instance_type": compute.get("vmSize", "")}
    except (OSError, ValueError):
        return None


def read_image_file(path: Path) -> dict[str, str]:
    """{"image_id": ..., "image_family": ...} from JSON or KEY=VALUE lines; {} if absent or unreadable."""
    text = read_text(path)
    if not text:
        return {}
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            return {str(k).lower(): str(v) for k, v in obj.items() if v is not None}
    except ValueError:
        pass
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip().lower()] = v.strip().strip('"')
    return out


def image_from_env(env: Mapping[str, str]) -> tuple[str, str] | None:
    digest = next((env[k] for k in IMAGE_ENV if env.get(k)), None)
    name = next((env[k] for k in IMAGE_NAME_ENV if env.get(k)), "")
    if "@" in name and not digest:
        name, digest = name.split("@", 1)
    if not digest:
        return None
    repo = name.split("@")[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    return digest, repo or digest


def os_release(root: Path) -> tuple[str, str]:
    # /etc/os-release is often a link to ../usr/lib/os-release: links are not followed, so read the
    # target's standard location (os-release(5)) when the first is not a regular file
    fields = read_image_file(root / "etc/os-release") or read_image_file(root / "usr/lib/os-release")
    family = fields.get("id", "linux")
    version = fields.get("version_id", "")
    return f"os:{family}-{version}".rstrip("-"), family


def resolve_identity(settings: CollectorSettings, env: Mapping[str, str] | None = None) -> Identity:
    env = os.environ if env is None else env
    proc, root, state = settings.proc, settings.root, settings.state_dir
    boot_id = (read_text(proc / "sys/kernel/random/boot_id") or "").strip()
    boot_time = float(psutil.boot_time())
    if not boot_id:
        boot_id = f"boot-{int(boot_time)}"
    hostname = clean(socket.gethostname(), 256)[0]
    cache_file = state / "identity.json"
    cache = read_json(cache_file) or {}
    sources: dict[str, str] = {}

    cloud: dict[str, str] | None = None
    if cache.get("boot_id") == boot_id and cache.get("cloud"):  # failures are not cached
        cloud = cache["cloud"]
    elif settings.cloud_metadata and not (settings.host_id and settings.image_id):
        cloud = cloud_metadata(settings.cloud_metadata_url, settings.cloud_metadata_timeout_s)

    image_id, family = settings.image_id, settings.image_family
    if image_id:
        sources["image_id"] = "settings"
    if not image_id and (found := image_from_env(env)):
        image_id, family, sources["image_id"] = found[0], family or found[1], "env"
    if not image_id and (baked := read_image_file(settings.image_file)).get("image_id"):
        image_id, family = baked["image_id"], family or baked.get("image_family")
        sources["image_id"] = "image_file"
    if not image_id and cloud and cloud.get("image_id"):
        image_id, family = cloud["image_id"], family or cloud.get("image_family")
        sources["image_id"] = "cloud"
    if not image_id:
        image_id, os_family = os_release(root)
        family, sources["image_id"] = family or os_family, "os-release"

    host_id = settings.host_id
    sources["host_id"] = "settings"
    if not host_id and cloud and cloud.get("instance_id"):
        host_id, sources["host_id"] = cloud["instance_id"], "cloud"
    if not host_id and (machine_id := (read_text(root / "etc/machine-id") or "").strip()):
        host_id, sources["host_id"] = machine_id, "machine-id"
    if not host_id:
        host_id, sources["host_id"] = cache.get("host_id") or str(uuid.uuid4()), "state"

    tags: dict[str, str] = {}
    if cloud:
        tags.update({f"cloud.{k}": str(v) for k, v in cloud.items()
                     if v and k in ("provider", "region", "zone", "instance_type")})
    if env.get("KUBERNETES_SERVICE_HOST") or Path("/.dockerenv").exists():
        tags["container.runtime"] = "kubernetes" if env.get("KUBERNETES_SERVICE_HOST") else "docker"
    for var, tag in (("POD_NAME", "container.pod"), ("POD_NAMESPACE", "container.namespace"),
                     ("NODE_NAME", "container.node"), ("CONTAINER_IMAGE", "container.image")):
        if env.get(var):
            tags[tag] = clean(env[var], 256)[0]

    first_seen = float(cache.get("first_seen") or 0) or min(boot_time, _now())
    with contextlib.suppress(OSError):  # a full disk must not stop the agent; the cache is an optimisation
        write_json(cache_file, {"boot_id": boot_id, "host_id": host_id, "cloud": cloud,
                                "first_seen": first_seen})
    # whatever settings, images or metadata say, the identity is sent in the contract's safe characters
    host = HostIdentity(host_id=safe_id(host_id), boot_id=safe_id(boot_id), image_id=safe_id(image_id),
                        image_family=safe_id(family or image_id), tags=tags)
    return Identity(host=host, boot_time=boot_time, hostname=hostname, first_seen=first_seen, sources=sources)


def _now() -> float:
    return time.time()


def describe(identity: Identity) -> dict[str, Any]:
    h = identity.host
    return {"host_id": h.host_id, "boot_id": h.boot_id, "image_id": h.image_id,
            "image_family": h.image_family, "sources": identity.sources}
