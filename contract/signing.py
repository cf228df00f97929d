"""Host signatures on telemetry messages: what is signed, where the signature travels, and the one rule every
consumer applies to it (docs/contract.md, "Signatures"; docs/security.md, "Host identity").

Each agent holds an Ed25519 host key and signs every telemetry message it sends. The signature covers the
message key (the host_id) and the exact value bytes, so it can neither be moved to another host's message nor
survive any change of the value. It travels in two message headers, as raw bytes:

    herdwatch-sig      64 bytes: Ed25519 signature of  DOMAIN + len(key) (4 bytes, big-endian) + key + value
    herdwatch-key      32 bytes: the raw Ed25519 public key that made it
    herdwatch-written  optional, ASCII decimal: the highest seq the host had written to its spool when it sent
                       this message. When present the signature covers it too, under another domain:
                       DOMAIN_WRITTEN + len(key) + key + written (8 bytes, big-endian, signed) + value

`written` makes tail loss countable: a host replaying a backlog announces with every message how far its
spool goes, so if it dies before the rest arrives the stream knows exactly how many events it never got.

Consumers (the stream worker's host stage and the storage sink) pin each host's public key on first use and
judge every later message with `judge`: same inputs, same verdict, in both. Nothing here raises on bad input:
`verify` and `judge` return their findings as data.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HEADER_SIGNATURE = "herdwatch-sig"
HEADER_PUBLIC_KEY = "herdwatch-key"
HEADER_WRITTEN = "herdwatch-written"
DOMAIN = b"herdwatch-telemetry-v1\x00"
"""Prefix of every signed message: a herdwatch signature cannot be taken for one over anything else."""
DOMAIN_WRITTEN = b"herdwatch-telemetry-written-v1\x00"
"""Prefix of a signed message that also carries `written`: never confused with one that does not."""
MAX_WRITTEN_DIGITS = 19
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
REASON_PREFIX = "identity conflict"
"""Every refusal's reason starts with this (the dead-letter metric label of the stream worker)."""

Headers = Mapping[str, Any] | Iterable[tuple[Any, Any]] | None
"""Kafka message headers as clients give them: (name, value) pairs (confluent-kafka, aiokafka), a mapping,
or None. Names may be str or bytes, values bytes (or str)."""


def signed_message(key: bytes | None, value: bytes | None, written: int | None = None) -> bytes:
    """The exact bytes a host signs for one message (and its `written` announcement, if it makes one)."""
    k = key or b""
    if written is None:
        return DOMAIN + struct.pack(">I", len(k)) + k + (value or b"")
    return DOMAIN_WRITTEN + struct.pack(">I", len(k)) + k + struct.pack(">q", written) + (value or b"")


def public_key_bytes(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(private: Ed25519PrivateKey, key: bytes | None, value: bytes | None,
         written: int | None = None) -> list[tuple[str, bytes]]:
    """The headers that sign one message (Ed25519 is deterministic: the same message gets the same headers),
    with the `written` announcement when given (a seq, >= 0)."""
    headers = [(HEADER_SIGNATURE, private.sign(signed_message(key, value, written))),
               (HEADER_PUBLIC_KEY, public_key_bytes(private))]
    if written is not None:
        headers.append((HEADER_WRITTEN, str(written).encode()))
    return headers


def fingerprint(public: bytes | None) -> str:
    """A public key as people compare it, like ssh-keygen -l: SHA256:<unpadded base64 of its SHA-256>."""
    if public is None:
        return "none"
    return "SHA256:" + base64.b64encode(hashlib.sha256(public).digest()).decode().rstrip("=")


class Status(StrEnum):
    SIGNED = "signed"  # a valid signature by `public_key`
    UNSIGNED = "unsigned"  # no signature headers at all
    INVALID = "invalid"  # signature headers that do not verify (see `reason`)


@dataclass(frozen=True, slots=True)
class Signature:
    """What a message's signature headers say about it."""

    status: Status
    public_key: bytes | None = None
    """The key that signed it (SIGNED), or the key it claims (INVALID, when the header was there)."""
    reason: str = ""
    """Why it is INVALID."""
    written: int | None = None
    """SIGNED only: the highest seq the host had written when it sent the message, if it said (signed too)."""


_SIGNATURE_HEADERS = (HEADER_SIGNATURE, HEADER_PUBLIC_KEY, HEADER_WRITTEN)


def _signature_headers(headers: Headers) -> dict[str, list[bytes]]:
    """The values of the three signature headers (names compared case-insensitively), in one pass."""
    found: dict[str, list[bytes]] = {}
    if headers is None:
        return found
    pairs = headers if type(headers) is list else headers.items() if isinstance(headers, Mapping) else headers
    for k, v in pairs:
        if type(k) is str:  # as confluent-kafka gives them
            k_text = k.lower()
        else:
            k_text = (k.decode("utf-8", "replace") if isinstance(k, (bytes, bytearray)) else str(k)).lower()
        if k_text in _SIGNATURE_HEADERS:
            found.setdefault(k_text, []).append(v if type(v) is bytes else v.encode() if isinstance(v, str)
                                                else bytes(v or b""))
    return found


@functools.cache
def load_verifier() -> tuple[Callable[[bytes, bytes], bytes], type[Exception]]:
    """libsodium's Ed25519 check (PyNaCl's `crypto_sign_open`) and the error it raises on a mismatch. The
    worker and the sink, which verify, install PyNaCl and call this at start-up so a broken install fails
    there, not at the first message; the agent only signs and never loads it. It costs half of what the same
    check costs through `cryptography` on our machines (docs/benchmarks.md, "Verification through
    libsodium") and is the stricter of the two: it also refuses small-order keys and points and
    non-canonical encodings, which no honest signer produces."""
    try:
        from nacl.bindings import crypto_sign_open
        from nacl.exceptions import BadSignatureError
    except ImportError as e:
        raise ImportError("verifying telemetry signatures needs PyNaCl, which the worker and the sink install "
                          "with them: pip install 'herdwatch[streams]' (or 'herdwatch[storage]')") from e
    return crypto_sign_open, BadSignatureError


def signature_matches(signature: bytes, message: bytes, public_key: bytes) -> bool:
    """Whether `signature` is `public_key`'s Ed25519 signature of `message` (any bytes in; never raises)."""
    open_signed, mismatch = load_verifier()
    try:
        open_signed(signature + message, public_key)
    except (mismatch, ValueError, TypeError):
        return False
    return True


def verify(headers: Headers, key: bytes | None, value: bytes | None) -> Signature:
    """Check a message's signature headers against its key and value. Never raises on bad input."""
    found = _signature_headers(headers)
    sigs, keys = found.get(HEADER_SIGNATURE, []), found.get(HEADER_PUBLIC_KEY, [])
    if not sigs and not keys:
        return Signature(Status.UNSIGNED)
    claimed = keys[0] if len(keys) == 1 and len(keys[0]) == PUBLIC_KEY_BYTES else None
    if len(sigs) != 1 or len(keys) != 1:
        return Signature(Status.INVALID, claimed, f"expected one {HEADER_SIGNATURE} and one {HEADER_PUBLIC_KEY} "
                                                  f"header, got {len(sigs)} and {len(keys)}")
    if claimed is None:
        return Signature(Status.INVALID, None, f"{HEADER_PUBLIC_KEY} must be a {PUBLIC_KEY_BYTES}-byte raw "
                                               f"Ed25519 public key, got {len(keys[0])} bytes")
    if len(sigs[0]) != SIGNATURE_BYTES:
        return Signature(Status.INVALID, claimed, f"{HEADER_SIGNATURE} must be {SIGNATURE_BYTES} bytes, "
                                                  f"got {len(sigs[0])}")
    written_values = found.get(HEADER_WRITTEN, [])
    written: int | None = None
    if written_values:
        raw = written_values[0]
        if len(written_values) != 1 or not raw.isdigit() or len(raw) > MAX_WRITTEN_DIGITS or not raw.isascii():
            return Signature(Status.INVALID, claimed, f"{HEADER_WRITTEN} must appear once, as a decimal seq of at "
                                                      f"most {MAX_WRITTEN_DIGITS} digits")
        written = int(raw)
        if written >= 2**63:
            return Signature(Status.INVALID, claimed, f"{HEADER_WRITTEN} is out of range")
    if not signature_matches(sigs[0], signed_message(key, value, written), claimed):
        return Signature(Status.INVALID, claimed, "the signature does not match the message key and value"
                         + (f" and {HEADER_WRITTEN}" if written is not None else ""))
    return Signature(Status.SIGNED, claimed, written=written)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a host's events in one message are accepted, and the pin to store."""

    accepted: bool
    pin: bytes | None = None
    """A key to pin for the host now: first use, or an operator's re-pin (None: keep what is pinned)."""
    reason: str = ""
    """Why the message was refused (starts with REASON_PREFIX)."""
    pinned: bytes | None = None
    offered: bytes | None = None


def judge(host: str, signature: Signature, pinned: bytes | None, require: bool,
          repin: Mapping[str, str] | None = None) -> Verdict:
    """The rule, trust on first use as SSH has it, for one host's events in one message.

    - a signature that does not verify is refused;
    - the first valid signature of a host pins its key; later messages must be signed by that key;
    - an unsigned message is refused when signatures are required (`require`) or the host has a pinned key,
      and accepted (nothing pinned) otherwise: third-party producers that do not sign;
    - `repin` (host -> fingerprint, set by an operator after a re-image) lets exactly that key replace the pin.
    """
    offered = signature.public_key
    if signature.status is Status.INVALID:
        return Verdict(False, reason=f"{REASON_PREFIX}: bad signature for host {host}: {signature.reason} "
                                     f"(pinned {fingerprint(pinned)}, offered {fingerprint(offered)})",
                       pinned=pinned, offered=offered)
    if signature.status is Status.UNSIGNED:
        if pinned is not None:
            return Verdict(False, reason=f"{REASON_PREFIX}: unsigned batch for host {host}, whose key "
                                         f"{fingerprint(pinned)} is pinned", pinned=pinned)
        if require:
            return Verdict(False, reason=f"{REASON_PREFIX}: unsigned batch for host {host}; signatures are "
                                         "required (REQUIRE_SIGNATURES=false accepts producers that do not sign)")
        return Verdict(True)
    assert offered is not None
    if pinned is None:
        return Verdict(True, pin=offered, offered=offered)
    if pinned == offered:
        return Verdict(True, pinned=pinned, offered=offered)
    if repin and repin.get(host) == fingerprint(offered):
        return Verdict(True, pin=offered, pinned=pinned, offered=offered)
    return Verdict(False, reason=f"{REASON_PREFIX}: host {host} has the pinned key {fingerprint(pinned)}; this "
                                 f"batch is signed with {fingerprint(offered)}", pinned=pinned, offered=offered)
