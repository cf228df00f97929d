"""Reading a live system safely: processes vanish, /proc entries are unreadable, bytes are not UTF-8,
and files may be planted by the users the agent watches.

`absent(fn)` is the one wrapper around psutil calls: NoSuchProcess, ZombieProcess, AccessDenied and
their OS equivalents become None ("absent"), never an exception.

Every file the agent reads goes through `open_regular` (directly or through `read_bounded`,
`read_text`, `read_below`): O_RDONLY|O_NONBLOCK|O_NOFOLLOW|O_CLOEXEC, then an fstat check that the
opened object is a regular file. So a FIFO cannot block a probe (a non-blocking open of a FIFO returns
at once and is refused), a device, socket or directory is refused, and a symlink as the last path
component is never followed. Reads are capped (`limit` bytes) and report truncation.

Paths inside users' home folders are read with `read_below(base, rel)`: `base` (the home folder, whose
location root chose in /etc/passwd) is trusted; below it every component is opened with O_NOFOLLOW
relative to its parent's descriptor, so ~/.ssh -> /etc does not lead the agent anywhere, and a file
with more than one hard link is refused (a user could hard-link a file they cannot read on a host
without fs.protected_hardlinks). The agent never returns another file's content through a link.

Every file the agent writes goes through `create_private` / `ensure_private_dir`: mode 0600 / 0700
whatever the umask, O_NOFOLLOW, so a symlink planted at one of its paths is never written through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

import psutil

T = TypeVar("T")

ABSENT_ERRORS: tuple[type[BaseException], ...] = (
    psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied,
    FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError,
)

READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_MODE = 0o600
DIR_MODE = 0o700


class UnsafeFile(OSError):
    """The path is not a plain regular file (FIFO, device, socket, directory, link, hard-linked)."""


def absent(fn: Callable[[], T]) -> T | None:
    """Call fn; a vanished or unreadable process/file gives None."""
    try:
        return fn()
    except ABSENT_ERRORS:
        return None
    except OSError:  # e.g. ESRCH, EIO reading /proc of an exiting process, ELOOP for a link, UnsafeFile
        return None


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"\s+")


def to_text(value: bytes | str) -> tuple[str, bool]:
    """Valid UTF-8 text from bytes or a surrogate-escaped str; True when bytes had to be replaced."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), True


def clean(value: bytes | str, limit: int) -> tuple[str, bool, bool]:
    """Printable single-line text: (text, truncated, invalid_utf8). Control characters become spaces."""
    text, invalid = to_text(value)
    text = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    if len(text) > limit:
        return text[:limit], True, invalid
    return text, False, invalid


# -- reading ------------------------------------------------------------------------------------------
def open_regular(path: Path | str, dir_fd: int | None = None, single_link: bool = False) -> int:
    """A read-only descriptor of a regular file; never blocks, never follows a final symlink.

    Raises OSError (ELOOP for a link, UnsafeFile for anything that is not a regular file, or one with
    several hard links when `single_link`)."""
    fd = os.open(path, READ_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(errno.EINVAL, f"not a regular file: {path}")
        if single_link and st.st_nlink > 1:
            raise UnsafeFile(errno.EMLINK, f"file with {st.st_nlink} hard links refused: {path}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_fd(fd: int, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes from the descriptor's position (True if there was more)."""
    chunks: list[bytes] = []
    want = limit + 1
    while want > 0:
        try:
            chunk = os.read(fd, min(want, 1 << 20))
        except BlockingIOError:  # a file system that honours O_NONBLOCK on regular files: take what we have
            break
        if not chunk:
            break
        chunks.append(chunk)
        want -= len(chunk)
    data = b"".join(chunks)
    return data[:limit], len(data) > limit


def read_bounded(path: Path | str, limit: int) -> tuple[bytes, bool] | None:
    """At most `limit` bytes of a regular file (True if there was more); None if absent, unreadable,
    a link or not a regular file. Parent directories are trusted (root-owned system paths, /proc)."""
    def read() -> tuple[bytes, bool]:
        fd = open_regular(path)
        try:
            return read_fd(fd, limit)
        finally:
            os.close(fd)
    return absent(read)


def read_proc_file(path: str, limit: int) -> bytes | None:
    """At most `limit` bytes of a small kernel file (/proc/sys/..., /proc/<pid>/...) in one read: open
    (non-blocking, no final link followed), read, close; no fstat, as procfs entries are kernel files and
    each of these reads runs every probe cycle. None if absent or unreadable."""
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_text(path: Path | str, limit: int = 4_000_000, what: str = "file") -> str | None:
    """A file's text (see read_bounded); a file over `limit` bytes is cut and counted as `what`."""
    got = read_bounded(path, limit)
    if got is None:
        return None
    if got[1]:
        from collectors import signals  # signals imports nothing of ours; kept lazy for import order
        signals.input_truncated.emit(what=what)
    return to_text(got[0])[0]


def _parts(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p and p != "."]
    if not parts or ".." in parts:
        raise UnsafeFile(errno.EINVAL, f"refused relative path {rel!r}")
    return parts


def _open_parent(base: Path | str, parts: list[str]) -> int:
    """A descriptor of base/parts[:-1], opened one component at a time, none of them followed if a symlink
    (`base` itself is trusted). The caller closes it."""
    dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts[:-1]:
            nxt = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = nxt
    except BaseException:
        os.close(dir_fd)
        raise
    return dir_fd


def read_below(base: Path | str, rel: str, limit: int) -> tuple[bytes, bool] | None:
    """At most `limit` bytes of base/rel where no component of `rel` may be a symlink and the file has
    one hard link; `base` itself is trusted. None if absent, unreadable or refused."""
    def read() -> tuple[bytes, bool]:
        parts = _parts(rel)
        dir_fd = _open_parent(base, parts)
        try:
            fd = open_regular(parts[-1], dir_fd=dir_fd, single_link=True)
        finally:
            os.close(dir_fd)
        try:
            return read_fd(fd, limit)
        finally:
            os.close(fd)
    return absent(read)


def lstat_below(base: Path | str, rel: str) -> os.stat_result | None:
    """lstat of base/rel without following a link in any component of `rel` (None if absent/refused)."""
    def look() -> os.stat_result:
        parts = _parts(rel)
        dir_fd = _open_parent(base, parts)
        try:
            return os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        finally:
            os.close(dir_fd)
    return absent(look)


# -- writing ------------------------------------------------------------------------------------------
def ensure_private_dir(path: Path) -> None:
    """Create `path` (and missing parents) and make it a 0700 directory; raises OSError if it is a
    symlink or not a directory. Parents that already exist are left as they are."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(path, DIR_FLAGS)  # ELOOP if a symlink was planted at the path: never used
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != DIR_MODE:
            os.fchmod(fd, DIR_MODE)
    finally:
        os.close(fd)


def create_private(path: Path, flags: int) -> int:
    """Open `path` for writing with mode 0600 (whatever the umask), never through a symlink.

    `flags` adds to O_WRONLY|O_CREAT|O_NOFOLLOW|O_CLOEXEC (e.g. O_APPEND, O_EXCL, O_TRUNC, or O_RDWR
    instead of O_WRONLY). An existing file is chmod'ed to 0600; a non-regular file is refused."""
    access = os.O_RDWR if flags & os.O_RDWR else os.O_WRONLY
    fd = os.open(path, access | (flags & ~os.O_RDWR) | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(errno.EINVAL, f"not a regular file: {path}")
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: Path, mode: str) -> BinaryIO:
    """A binary file object for writing ("wb", "ab" or "r+b") created 0600, never through a symlink."""
    flags = {"wb": os.O_TRUNC, "ab": os.O_APPEND, "r+b": os.O_RDWR}[mode]
    return cast(BinaryIO, os.fdopen(create_private(path, flags), mode))


def open_for_reading(path: Path | str) -> BinaryIO:
    """A binary file object of a regular file (see open_regular); raises OSError otherwise."""
    return cast(BinaryIO, os.fdopen(open_regular(path), "rb"))


def remove_if_not_regular(path: Path) -> bool:
    """Unlink `path` if it is a symlink or another non-regular, non-directory object (the link itself,
    never its target); True if something was removed."""
    st = absent(lambda: os.lstat(path))
    if st is None or stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return False
    with contextlib.suppress(OSError):
        path.unlink()
        return True
    return False
