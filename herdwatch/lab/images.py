"""Lab images: small YAML files (images/<name>.yaml) naming what a host of the image runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

IMAGES_DIR = Path(__file__).resolve().parent / "images"


class ImageError(ValueError):
    pass


@dataclass(frozen=True)
class Job:
    name: str
    every_s: float
    cmd: str


@dataclass(frozen=True)
class Service:
    name: str
    cmd: list[str]


@dataclass(frozen=True)
class Image:
    name: str
    family: str
    version: int
    services: list[Service] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def image_id(self) -> str:
        return f"{self.family}-v{self.version}"


def available() -> list[str]:
    return sorted(p.stem for p in IMAGES_DIR.glob("*.yaml"))


def load_image(name: str) -> Image:
    path = IMAGES_DIR / f"{name}.yaml"
    if not path.exists():
        raise ImageError(f"no lab image {name!r}; images: {', '.join(available())} (files in {IMAGES_DIR})")
    raw: Any = yaml.safe_load(path.read_text()) or {}
    try:
        return Image(
            name=name,
            family=str(raw["family"]),
            version=int(raw["version"]),
            services=[Service(str(s["name"]), [str(a) for a in s["cmd"]]) for s in raw.get("services", [])],
            jobs=[Job(str(j["name"]), float(j["every"]), str(j["cmd"])) for j in raw.get("jobs", [])],
            files={str(k): str(v) for k, v in (raw.get("files") or {}).items()},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ImageError(f"{path}: {e!r}; each image needs family, version and services/jobs/files as in "
                         f"{IMAGES_DIR / 'web.yaml'}") from e
