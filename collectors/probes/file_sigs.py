"""Stat signatures of watched files, and directory listings kept while their directory is unchanged.

The config probe looks at about 120 paths every 5 s and almost never finds anything changed, so what an
unchanged path costs is what the probe costs. A path is looked at with one lstat on a plain string path;
its contents are read again only when its signature changed.

A signature is (path, device, inode, size, mtime_ns, ctime_ns, mode, uid). A file rewritten with the same
size and its old mtime put back (`touch -r`, an archive restore, a tool that keeps times) still changes
ctime, which no user can set. Timestamps come from a coarse clock (a kernel tick, a few ms), so two changes
within one tick can leave every field equal: a signature taken less than RACY_NS after its ctime is
"racy" (git's word for the same problem) and is not trusted. Its path is read again at the next look,
until a look comes late enough that a later change would have moved the ctime. A directory's listing is
kept by the same rule: adding, removing or renaming an entry moves the directory's mtime and ctime.
"""

from __future__ import annotations

import os
import stat
import time

Sig = tuple[str, int, int, int, int, int, int, int]

RACY_NS = 2_000_000_000
"""A signature taken within this of its ctime may hide a change made in the same clock tick."""

def stat_sig(path: str | os.PathLike[str]) -> Sig | None:
    """The signature of `path` itself (a link is not followed), or None if it is absent or refused."""
    try:
        return sig_of(os.fspath(path), os.lstat(path))
    except OSError:
        return None


def sig_of(path: str, st: os.stat_result) -> Sig:
    """The signature of a stat result taken by the caller (e.g. relative to a directory descriptor)."""
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid)


def racy(sig: Sig | None, now_ns: int) -> bool:
    """True when a change in the same clock tick as the last one could leave `sig` as it is."""
    return sig is not None and sig[5] > now_ns - RACY_NS


class Listings:
    """`os.listdir` of directories, answered from memory while a directory's signature is unchanged and
    not racy (see the module doc). Costs one lstat for an unchanged directory instead of an open, a
    getdents and a close."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[Sig, list[str]]] = {}
        self.listed = 0
        """Directories actually read (for tests and benchmarks)."""

    def names(self, path: str) -> list[str]:
        """The entry names of directory `path` ([] if it is absent, refused or not a directory). As
        `os.listdir`, a link to a directory is followed: its signature is the target's."""
        try:
            sig = sig_of(path, os.stat(path))
        except OSError:
            sig = None
        if sig is None or not stat.S_ISDIR(sig[6]):
            self._kept.pop(path, None)
            return []
        kept = self._kept.get(path)
        if kept is not None and kept[0] == sig:
            return kept[1]
        try:
            names = os.listdir(path)
        except OSError:
            self._kept.pop(path, None)
            return []
        self.listed += 1
        if racy(sig, time.time_ns()):
            self._kept.pop(path, None)  # listed again next time
        else:
            self._kept[path] = (sig, names)
        return names
