"""The host key: an Ed25519 key made at the agent's first start, which signs every telemetry batch it sends.

The key lives in the private state dir (`host.key`, PEM PKCS#8, mode 0600, directory 0700). It is created
once and never overwritten: written to a temp file, then hard-linked into place, which fails if the file
exists (a second agent starting at the same moment loads the winner's key). A missing key is created; a
key file that exists but cannot be read as an Ed25519 key stops the agent with what to do, since a new key
would make the stream workers and the sink refuse the host (its old key is pinned).

Batches are signed when they are sent, not when spooled: Ed25519 signatures are deterministic, so a
spooled record sent again after a crash or restart carries exactly the same headers as before.


Print this host's key fingerprint (to compare with an identity_conflict finding before re-pinning):

    python -m collectors.hostkey [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from collectors.safe import create_private, ensure_private_dir, read_bounded
from contract.signing import fingerprint, public_key_bytes, sign

KEY_FILE = "host.key"
MAX_KEY_BYTES = 4096


class HostKey:
    """Signs messages with one Ed25519 key."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.public = public_key_bytes(private)
        self.fingerprint = fingerprint(self.public)

    def headers(self, key: bytes | None, value: bytes, written: int | None = None) -> list[tuple[str, bytes]]:
        """The Kafka headers that sign one message (key = the host_id, value = the batch bytes), announcing
        `written` (the highest seq spooled so far) when given."""
        return sign(self.private, key, value, written)


def load_or_create(path: Path) -> HostKey:
    """The host key stored at `path`, created (0600, never overwriting anything) if there is none."""
    ensure_private_dir(path.parent)
    if not os.path.lexists(path):
        _create(path)
    got = read_bounded(path, MAX_KEY_BYTES)
    if got is None or got[1]:
        raise RuntimeError(f"cannot read the host key {path} (not a regular file, unreadable or too big); "
                           "fix its ownership or type. Do not delete it unless the host is to be re-pinned "
                           "(docs/security.md, \"Host identity\")")
    try:
        private = load_pem_private_key(got[0], password=None)
    except (ValueError, TypeError) as e:
        raise RuntimeError(f"the host key {path} is damaged ({e}); restore it from a backup, or remove it and "
                           "re-pin the host's new key (docs/security.md, \"Host identity\")") from e
    if not isinstance(private, Ed25519PrivateKey):
        raise RuntimeError(f"the host key {path} is not an Ed25519 key; remove it and re-pin the host's new key "
                           "(docs/security.md, \"Host identity\")")
    return HostKey(private)


def _create(path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    with os.fdopen(create_private(tmp, os.O_EXCL), "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # fails if a key appeared meanwhile: never overwritten
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    with contextlib.suppress(OSError):  # make the new name durable
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def main(argv: list[str] | None = None) -> int:
    from collectors.settings import CollectorSettings

    parser = argparse.ArgumentParser(prog="python -m collectors.hostkey",
                                     description="print this host's key fingerprint (creating the key if needed)")
    parser.add_argument("--state-dir", type=Path, default=None, help="the agent's state dir")
    args = parser.parse_args(argv)
    settings = CollectorSettings(**({"state_dir": args.state_dir} if args.state_dir else {}))
    key = load_or_create(settings.host_key_path)
    print(f"{key.fingerprint}  {settings.host_key_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
