"""Installed packages (dpkg, rpm or apk) with versions; re-read only when the package database's
stat signature changes. Changes are package.change {key: name, before, after}."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from collectors.probes.base import Emit, Probe, diff_maps
from collectors.probes.file_sigs import stat_sig
from collectors.safe import read_text
from contract.events import Kind

DPKG_STATUS = "var/lib/dpkg/status"
APK_INSTALLED = "lib/apk/db/installed"
RPM_DBS = ("var/lib/rpm/rpmdb.sqlite", "var/lib/rpm/Packages", "usr/lib/sysimage/rpm/rpmdb.sqlite")


def parse_dpkg_status(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for para in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in para.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            k, _, v = line.partition(":")
            fields[k] = v.strip()
        name, version, status = fields.get("Package"), fields.get("Version"), fields.get("Status", "")
        if name and version and status.endswith(" installed"):
            arch = fields.get("Architecture", "")
            key = name if arch in ("", "all") or name not in out else f"{name}:{arch}"
            out[key] = version
    return out


def parse_apk_installed(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("P:"):
            name = line[2:]
        elif line.startswith("V:") and name:
            out[name] = line[2:]
    return out


class PackageProbe(Probe):
    name = "packages"

    def __init__(self, interval: float = 60.0, inventory_interval: float | None = 21600.0,
                 root: Path = Path("/")) -> None:
        super().__init__(interval, inventory_interval)
        self.root = root
        self.items: dict[str, str] = {}
        self.manager = ""
        self._sig: object = None
        self._started = False

    def read(self) -> tuple[str, dict[str, str]] | None:
        dpkg = self.root / DPKG_STATUS
        sig = stat_sig(dpkg)
        if sig is not None:
            if sig == self._sig:
                return None
            self._sig = sig
            return "dpkg", parse_dpkg_status(read_text(dpkg) or "")
        apk = self.root / APK_INSTALLED
        if (sig := stat_sig(apk)) is not None:
            if sig == self._sig:
                return None
            self._sig = sig
            return "apk", parse_apk_installed(read_text(apk) or "")
        for db in RPM_DBS:
            if (sig := stat_sig(self.root / db)) is not None:
                if sig == self._sig:
                    return None
                self._sig = sig
                return "rpm", self._rpm()
        return None

    def _rpm(self) -> dict[str, str]:
        rpm = shutil.which("rpm")
        if not rpm:
            return {}
        cmd = [rpm, "-qa", "--root", str(self.root), "--qf", "%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE}\n"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def collect(self, full: bool) -> list[Emit]:
        out: list[Emit] = []
        got = self.read()
        if got is not None:
            manager, items = got
            if self._started:
                out = diff_maps(Kind.PACKAGE_CHANGE, self.items, items)
            self.manager, self.items = manager, items
        self._started = True
        if full:
            out.append((Kind.PACKAGE_INVENTORY, {"items": dict(sorted(self.items.items())),
                                                 "manager": self.manager}))
        return out
