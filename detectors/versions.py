"""Package version ordering as the distributions define it.

    compare("dpkg", "1:1.0", "2.0") > 0          # Debian/Ubuntu: python-debian's dpkg ordering
    compare("rpm", "1.0~rc1-1", "1.0-1") < 0     # RHEL-like: rpmvercmp on epoch:version-release

Debian ordering comes from python-debian (`debian.debian_support.Version`): epoch, upstream version,
revision, "~" before everything, letters before non-letters. RPM ordering is written here, after rpm's
rpmvercmp: alphanumeric segments compared in turn (numbers numerically, without leading zeros; a
number is newer than letters), separators ignored, "~" sorts before anything (even the end of the
string), "^" sorts after the end of the string but before any other segment; epoch first, then
version, then release (a missing epoch is 0).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

Scheme = Literal["dpkg", "rpm"]


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def rpmvercmp(a: str, b: str) -> int:
    """-1, 0 or 1 as rpm orders two version (or release) strings."""
    if a == b:
        return 0
    i, j, la, lb = 0, 0, len(a), len(b)
    while i < la or j < lb:
        while i < la and not _alnum(a[i]) and a[i] not in "~^":
            i += 1
        while j < lb and not _alnum(b[j]) and b[j] not in "~^":
            j += 1
        ca = a[i] if i < la else ""
        cb = b[j] if j < lb else ""
        if ca == "~" or cb == "~":  # tilde: before everything, the end of the string included
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if ca == "^" or cb == "^":  # caret: after the end of the string, before any other segment
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not (ca and cb):
            break
        si, sj = i, j
        if ca.isdigit():
            while i < la and a[i].isascii() and a[i].isdigit():
                i += 1
            while j < lb and b[j].isascii() and b[j].isdigit():
                j += 1
            numeric = True
        else:
            while i < la and a[i].isascii() and a[i].isalpha():
                i += 1
            while j < lb and b[j].isascii() and b[j].isalpha():
                j += 1
            numeric = False
        seg_a, seg_b = a[si:i], b[sj:j]
        if not seg_b:  # different kinds of segment: the number is newer
            return 1 if numeric else -1
        if numeric:
            seg_a, seg_b = seg_a.lstrip("0"), seg_b.lstrip("0")
            if len(seg_a) != len(seg_b):
                return 1 if len(seg_a) > len(seg_b) else -1
        if seg_a != seg_b:
            return 1 if seg_a > seg_b else -1
    if i >= la and j >= lb:
        return 0
    return -1 if i >= la else 1


def split_evr(version: str) -> tuple[str, str, str]:
    """(epoch, version, release) of an RPM "[epoch:]version[-release]" (epoch "0" when missing)."""
    epoch, sep, rest = version.partition(":")
    if not sep or not epoch.isdigit():
        epoch, rest = "0", version
    ver, sep, release = rest.rpartition("-")
    if not sep:
        ver, release = rest, ""
    return epoch or "0", ver, release


def rpm_compare(a: str, b: str) -> int:
    """-1, 0 or 1 comparing two RPM epoch:version-release strings (rpm's labelCompare)."""
    ea, va, ra = split_evr(a)
    eb, vb, rb = split_evr(b)
    c = _sign(int(ea) - int(eb))
    if c:
        return c
    c = rpmvercmp(va, vb)
    if c:
        return c
    return rpmvercmp(ra, rb)


@lru_cache(maxsize=65536)
def _dpkg_version(version: str) -> object:
    from debian.debian_support import Version

    return Version(version)


def dpkg_compare(a: str, b: str) -> int:
    """-1, 0 or 1 comparing two Debian versions (python-debian's implementation of dpkg's ordering)."""
    va, vb = _dpkg_version(a), _dpkg_version(b)
    return 0 if va == vb else (1 if va > vb else -1)  # type: ignore[operator]


def compare(scheme: Scheme, a: str, b: str) -> int:
    """-1, 0 or 1: `a` older than, equal to or newer than `b` in the scheme's ordering."""
    if scheme == "dpkg":
        return dpkg_compare(a, b)
    if scheme == "rpm":
        return rpm_compare(a, b)
    raise ValueError(f"unknown version scheme {scheme!r} (dpkg or rpm)")


def valid(scheme: Scheme, version: str) -> bool:
    """True when `version` is a well-formed version of the scheme (dpkg is strict; any rpm string is)."""
    if scheme != "dpkg":
        return bool(version)
    try:
        _dpkg_version(version)
    except ValueError:
        return False
    return True
