"""OSV data for the engines: read from disk here (the detectors never read files), handed over in memory.

    source = osv_source(config)          # EngineConfig.osv_path, else HERDWATCH_WORKER_OSV_PATH; None: no data
    FamilyEngine(store, config, osv=source)

The data is a folder of OSV JSON files (searched recursively), a .zip of them, or one .json file (one record
or a list). Unreadable or malformed files are skipped. `OsvSource` keeps the parsed `detectors.osv.OsvIndex`
and, when the engine asks for it, looks at most every `check_every_s` seconds (wall time) whether the file or
the folder's files changed (newest modification time and count), and reloads then: the user refreshes the data
set in place and the worker follows without a restart. One source is shared by every engine of a process.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from detectors.engine_config import EngineConfig
from detectors.osv import OsvIndex

ENV_PATH = "HERDWATCH_WORKER_OSV_PATH"
"""Where the OSV data is when the engine's `osv_path` knob is not set."""
CHECK_EVERY_S = 300.0

log = logging.getLogger(__name__)


def _files(path: Path) -> Iterator[Path]:
    for dirpath, _, names in sorted(os.walk(path)):
        for n in sorted(names):
            if n.endswith(".json"):
                yield Path(dirpath) / n


def signature(path: Path) -> tuple[int, int] | None:
    """(newest modification time, file count) of a folder, (mtime, size) of a file; None when unreadable."""
    try:
        if path.is_dir():
            newest, count = 0, 0
            for f in _files(path):
                newest = max(newest, f.stat().st_mtime_ns)
                count += 1
            return newest, count
        st = path.stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None


def parse(raw: bytes) -> list[dict[str, Any]]:
    """The records of one OSV JSON document (one record or a list); [] when it is not JSON."""
    try:
        data = json.loads(raw)
    except ValueError:
        return []
    if isinstance(data, list):
        return [d for d in data if isinstance(d, dict)]
    return [data] if isinstance(data, dict) else []


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every record under `path` (folder, .zip or file)."""
    if path.is_dir():
        for f in _files(path):
            try:
                yield from parse(f.read_bytes())
            except OSError:
                continue
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith(".json"):
                    yield from parse(z.read(name))
    elif path.exists():
        yield from parse(path.read_bytes())


def load_index(path: str | Path) -> OsvIndex:
    """Read and index the OSV data at `path` (an unreadable .zip gives an empty index and a warning: the worker
    keeps running without vulnerable-package findings until the data is fixed in place)."""
    try:
        return OsvIndex.from_records(read_records(Path(path)))
    except (OSError, zipfile.BadZipFile) as e:
        log.warning("OSV data at %s cannot be read (%s): no vulnerable packages are reported from it", path, e)
        return OsvIndex()


class OsvSource:
    """The OSV index of one path, reloaded when the data changes on disk. Call it for the current index."""

    def __init__(self, path: str | Path, check_every_s: float = CHECK_EVERY_S,
                 wall: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.check_every_s = float(check_every_s)
        self.wall = wall
        self.signature = signature(self.path)
        self.index = load_index(self.path)
        self.checked = wall()
        self.loads = 1

    def refresh(self) -> bool:
        """Reload when the data changed on disk; True if it was reloaded."""
        self.checked = self.wall()
        now = signature(self.path)
        if now == self.signature:
            return False
        self.signature, self.index = now, load_index(self.path)
        self.loads += 1
        log.info("OSV data at %s reloaded: %d records", self.path, self.index.records)
        return True

    def __call__(self) -> OsvIndex:
        if self.wall() - self.checked >= self.check_every_s:
            self.refresh()
        return self.index

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "wall"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.wall = time.monotonic


def osv_path(config: EngineConfig | None = None) -> str | None:
    """The configured OSV data path: the `osv_path` knob, else HERDWATCH_WORKER_OSV_PATH (None: no data)."""
    return (config.osv_path if config is not None else None) or os.environ.get(ENV_PATH) or None


def osv_source(config: EngineConfig | None = None) -> OsvSource | None:
    """The OSV source the configuration names, loaded (None when no data is configured)."""
    path = osv_path(config)
    return OsvSource(path) if path else None
