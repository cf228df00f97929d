"""SSH public keys as herdwatch reports them: type, fingerprint and comment, never the key file's contents.

One authorized key of a user is one configuration entry (docs/contract.md, "Authorized keys"):

    key    authorized_keys.key:<user>:SHA256:<fingerprint>       (the fingerprint as `ssh-keygen -l` prints it)
    value  <type>[ <comment>]                                     e.g. "ssh-ed25519 deploy@ci"

The herdwatch agent parses each line of a user's authorized_keys (collectors/probes/config.py); the osquery
stage builds the same entries from osquery's authorized_keys table (streams/osquery_map.py). Everything here
treats its input as hostile: a line that is not a key is skipped, the key blob must decode and name the
type it claims, and the comment is made printable and short (it is free text anyone who can write the file
chose).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

ENTRY_PREFIX = "authorized_keys.key:"
"""Configuration keys of single authorized keys start with this."""
MAX_COMMENT_CHARS = 40
"""A comment is cut to this many characters (an ellipsis marks the cut): the entry's value stays within
what a feature keeps (detectors.features.MAX_VALUE), and a comment is no place for a payload."""
MAX_KEYS_PER_USER = 64
"""At most this many keys of one user are reported (a file with more is itself the finding)."""
MAX_LINE_CHARS = 16384
MAX_BLOB_BYTES = 8192
KEY_TYPE = re.compile(r"(?:ssh-(?:rsa|dss|ed25519|ed448)|ecdsa-sha2-nistp(?:256|384|521)"
                      r"|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)(?:-cert-v01@openssh\.com)?")
"""The key types OpenSSH accepts in authorized_keys (certificates included)."""
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_USER = re.compile(r"[^A-Za-z0-9._@+-]")


@dataclass(frozen=True, slots=True)
class PublicKey:
    type: str
    fingerprint: str
    """SHA256:<unpadded base64 of the SHA-256 of the key blob>, like `ssh-keygen -l`."""
    comment: str
    """Printable, at most MAX_COMMENT_CHARS; "" when the line has none."""
    options: bool = False
    """The line has options before the key (from=, command=, restrict, ...)."""


def fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def safe_comment(text: str) -> str:
    """A comment as herdwatch shows it: control and bidirectional characters escaped, whitespace collapsed,
    at most MAX_COMMENT_CHARS characters."""
    text = _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), " ".join(text.split()))
    return text if len(text) <= MAX_COMMENT_CHARS else text[: MAX_COMMENT_CHARS - 1] + "\u2026"


def key_blob(key_type: str, b64: str) -> bytes | None:
    """The decoded key blob if `b64` is base64 of an SSH key of `key_type` (its first field names the type)."""
    if not KEY_TYPE.fullmatch(key_type) or len(b64) > MAX_BLOB_BYTES * 2:
        return None
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(blob) < 4 or len(blob) > MAX_BLOB_BYTES:
        return None
    (n,) = struct.unpack(">I", blob[:4])
    return blob if blob[4:4 + n] == key_type.encode() else None


def _split_options(line: str) -> tuple[str, str]:
    """(options, rest): the options field ends at the first space outside double quotes (inside them a
    backslash escapes a quote, as sshd reads them)."""
    quoted = escaped = False
    for i, c in enumerate(line):
        if escaped:
            escaped = False
        elif c == "\\" and quoted:
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c in " \t" and not quoted:
            return line[:i], line[i:].lstrip(" \t")
    return line, ""


def parse_line(line: str) -> PublicKey | None:
    """One authorized_keys line as a PublicKey, or None (blank, comment, malformed, unknown type)."""
    line = line.strip()
    if not line or line.startswith("#") or len(line) > MAX_LINE_CHARS:
        return None
    options = False
    first = line.split(None, 1)[0]
    if not KEY_TYPE.fullmatch(first):
        _, line = _split_options(line)
        options = True
    parts = line.split(None, 2)
    if len(parts) < 2:
        return None
    blob = key_blob(parts[0], parts[1])
    if blob is None:
        return None
    return PublicKey(parts[0], fingerprint(blob), safe_comment(parts[2]) if len(parts) > 2 else "", options)


def parse_file(data: bytes | str) -> list[PublicKey]:
    """Every key of an authorized_keys file (bytes decoded leniently), at most MAX_KEYS_PER_USER."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    out: list[PublicKey] = []
    for line in text.splitlines():
        key = parse_line(line)
        if key is not None:
            out.append(key)
            if len(out) >= MAX_KEYS_PER_USER:
                break
    return out


def user_part(user: str) -> str:
    """How a user name appears in an entry's key (no ':' or odd characters)."""
    return _USER.sub("_", user)[:64] or "_"


def entry(user: str, key: PublicKey) -> tuple[str, str]:
    """The configuration entry (key, value) of one authorized key of `user`."""
    value = key.type + (f" {key.comment}" if key.comment else "")
    return f"{ENTRY_PREFIX}{user_part(user)}:{key.fingerprint}", value


def parse_entry(config_key: str, value: str) -> dict[str, str] | None:
    """{user, fingerprint, type, comment} of an entry made by `entry`, or None if it is not one."""
    if not config_key.startswith(ENTRY_PREFIX):
        return None
    user, sep, fp = config_key[len(ENTRY_PREFIX):].partition(":")
    if not sep or not fp.startswith("SHA256:"):
        return None
    key_type, _, comment = value.partition(" ")
    out = {"user": user, "fingerprint": fp, "type": key_type}
    if comment:
        out["comment"] = comment
    return out
