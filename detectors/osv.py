"""Vulnerable packages: the package inventory matched against vulnerability data in the OSV format.

    index = OsvIndex.from_records(records)     # OSV records (dicts), already read and parsed
    index.match(Platform("ubuntu", "22.04"), "openssh-server", "1:8.9p1-3ubuntu0.6")   # -> [Match, ...]

This module is pure: it never reads files. The worker and the CLI read the data (a folder or a .zip of
OSV JSON files, or one file; `streams/osv_data.py`, which also reloads it when it changes) and hand the
engine an `OsvIndex`.

A record's `affected[]` entries name a package in an ecosystem ("Debian:12", "Ubuntu:22.04",
"Ubuntu:Pro:22.04:LTS", "Red Hat:enterprise_linux:9::baseos", "Rocky Linux:9", "AlmaLinux:9", ...).
A host matches an entry when the ecosystem is its distribution's and names its release (or no
release), and its package is the entry's package or one of the binaries the entry lists
(`ecosystem_specific.binaries`, as Ubuntu's records do). The version is affected when it is listed in
`versions` or lies in an ECOSYSTEM range (introduced / fixed / last_affected / limit events), compared
with the distribution's own ordering (detectors/versions.py). Withdrawn records are skipped.

Debian's records name source packages: a binary whose name differs from its source (openssh-server
from openssh) matches only when the record lists it as a binary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cmp_to_key
from typing import Any

from detectors.versions import Scheme, compare, valid

DISTROS: dict[str, tuple[str, Scheme]] = {
    "debian": ("Debian", "dpkg"),
    "ubuntu": ("Ubuntu", "dpkg"),
    "rhel": ("Red Hat", "rpm"),
    "rocky": ("Rocky Linux", "rpm"),
    "almalinux": ("AlmaLinux", "rpm"),
    "opensuse-leap": ("openSUSE", "rpm"),
    "sles": ("SUSE", "rpm"),
    "mageia": ("Mageia", "rpm"),
}
"""os-release ID -> (OSV ecosystem name, version ordering)."""


@dataclass(frozen=True)
class Platform:
    """A host's distribution as /etc/os-release names it (ID, VERSION_ID)."""

    os_id: str
    version_id: str = ""

    @property
    def scheme(self) -> Scheme | None:
        d = DISTROS.get(self.os_id)
        return d[1] if d else None

    def matches(self, ecosystem: str) -> bool:
        d = DISTROS.get(self.os_id)
        if d is None:
            return False
        base, _, rest = ecosystem.partition(":")
        if base != d[0]:
            return False
        parts = {tok for piece in rest.split(":") for tok in piece.split() if tok}
        if not parts - {"Pro", "LTS", "enterprise_linux"} or not self.version_id:
            return True  # the ecosystem names no release
        major = self.version_id.split(".")[0]
        return self.version_id in parts or major in parts


@dataclass(frozen=True)
class Match:
    """One advisory that affects an installed package version."""

    advisory: str
    aliases: tuple[str, ...]
    package: str
    installed: str
    fixed: str | None
    summary: str = ""

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.advisory, *self.aliases)


@dataclass(frozen=True)
class _Entry:
    advisory: str
    aliases: tuple[str, ...]
    summary: str
    ecosystem: str
    package: str
    events: tuple[tuple[str, str], ...]
    """(kind, version) of every ECOSYSTEM range event, in file order."""
    ranges: tuple[tuple[tuple[str, str], ...], ...]
    versions: tuple[str, ...]


@dataclass
class OsvIndex:
    """OSV entries indexed by package name (and binary names), built from records already in memory."""

    by_name: dict[str, list[_Entry]] = field(default_factory=dict)
    records: int = 0

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> OsvIndex:
        index = cls()
        index._index(records)
        return index

    def _index(self, records: Iterable[dict[str, Any]]) -> None:
        for rec in records:
            if not isinstance(rec, dict) or rec.get("withdrawn") or not rec.get("id"):
                continue
            self.records += 1
            aliases = tuple(str(a) for a in rec.get("aliases") or () if isinstance(a, str))
            for aff in rec.get("affected") or ():
                if not isinstance(aff, dict):
                    continue
                pkg = aff.get("package") or {}
                name, eco = str(pkg.get("name", "")), str(pkg.get("ecosystem", ""))
                if not name or not eco:
                    continue
                ranges = tuple(
                    tuple((k, str(v)) for ev in r.get("events") or () if isinstance(ev, dict) for k, v in ev.items())
                    for r in aff.get("ranges") or ()
                    if isinstance(r, dict) and r.get("type") == "ECOSYSTEM"
                )
                entry = _Entry(
                    advisory=str(rec["id"]),
                    aliases=aliases,
                    summary=str(rec.get("summary", ""))[:200],
                    ecosystem=eco,
                    package=name,
                    events=tuple(ev for r in ranges for ev in r),
                    ranges=ranges,
                    versions=tuple(str(v) for v in aff.get("versions") or ()),
                )
                names = {name}
                spec = aff.get("ecosystem_specific") or {}
                for b in spec.get("binaries") or () if isinstance(spec, dict) else ():
                    if isinstance(b, dict) and b.get("binary_name"):
                        names.add(str(b["binary_name"]))
                    elif isinstance(b, str):
                        names.add(b)
                for n in names:
                    self.by_name.setdefault(n, []).append(entry)

    # ---- matching ----------------------------------------------------------------------------------
    def match(self, platform: Platform, package: str, version: str) -> list[Match]:
        """Advisories affecting `package` at `version` on `platform` (one per advisory)."""
        scheme = platform.scheme
        name = package.partition(":")[0]  # dpkg reports a second architecture as name:arch
        if scheme is None or name not in self.by_name or not valid(scheme, version):
            return []
        out: dict[str, Match] = {}
        for e in self.by_name[name]:
            if e.advisory in out or not platform.matches(e.ecosystem):
                continue
            hit, fixed = _affected(scheme, version, e)
            if hit:
                out[e.advisory] = Match(e.advisory, e.aliases, name, version, fixed, e.summary)
        return sorted(out.values(), key=lambda m: m.advisory)


def _affected(scheme: Scheme, version: str, e: _Entry) -> tuple[bool, str | None]:
    """(affected, the lowest fixed version above `version`)."""
    if any(valid(scheme, v) and compare(scheme, version, v) == 0 for v in e.versions):
        return True, _next_fixed(scheme, version, e.events)
    for events in e.ranges:
        if _in_range(scheme, version, events):
            return True, _next_fixed(scheme, version, events)
    return False, None


def _in_range(scheme: Scheme, version: str, events: tuple[tuple[str, str], ...]) -> bool:
    def order(a: tuple[str, str], b: tuple[str, str]) -> int:
        if a[1] == "0" or b[1] == "0":
            return (b[1] == "0") - (a[1] == "0")
        return compare(scheme, a[1], b[1])

    known = [ev for ev in events if ev[1] == "0" or valid(scheme, ev[1])]
    ordered = sorted(known, key=cmp_to_key(order))  # OSV: evaluate the events in version order
    affected = False
    for kind, v in ordered:
        c = 1 if v == "0" else compare(scheme, version, v)
        if kind == "introduced" and c >= 0:
            affected = True
        elif (kind in ("fixed", "limit") and c >= 0) or (kind == "last_affected" and c > 0):
            affected = False
    return affected


def _next_fixed(scheme: Scheme, version: str, events: tuple[tuple[str, str], ...]) -> str | None:
    fixes = [v for k, v in events if k == "fixed" and valid(scheme, v) and compare(scheme, v, version) > 0]
    best: str | None = None
    for v in fixes:
        if best is None or compare(scheme, v, best) < 0:
            best = v
    return best
