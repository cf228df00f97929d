"""Host signatures (contract/signing.py): a signed message verifies; any change to its value, its key (the
host_id), the signature or the public key makes it fail; and `judge` applies trust on first use."""

from __future__ import annotations

import sys

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.signing import (
    HEADER_PUBLIC_KEY,
    HEADER_SIGNATURE,
    HEADER_WRITTEN,
    REASON_PREFIX,
    Signature,
    Status,
    fingerprint,
    judge,
    load_verifier,
    signature_matches,
    verify,
)
from simulator.keys import SimulatedKeys

KEYS = SimulatedKeys(b"test-seed")
EXAMPLES = 400

values = st.binary(min_size=0, max_size=2048)
hosts = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.:", min_size=1, max_size=40).map(str.encode)


def flip(data: bytes, index: int, bit: int) -> bytes:
    i = index % len(data)
    return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1:]


@given(hosts, values)
@settings(max_examples=EXAMPLES, deadline=None)
def test_a_signed_message_verifies(key: bytes, value: bytes) -> None:
    headers = KEYS.headers(key, value)
    got = verify(headers, key, value)
    assert got == Signature(Status.SIGNED, KEYS.key_for(key).public)
    assert verify(dict(headers), key, value).status is Status.SIGNED  # a mapping of headers works too


@given(hosts, values, st.data())
@settings(max_examples=EXAMPLES, deadline=None)
def test_any_tampering_fails_verification(key: bytes, value: bytes, data: st.DataObject) -> None:
    headers = dict(KEYS.headers(key, value))
    sig, pub = headers[HEADER_SIGNATURE], headers[HEADER_PUBLIC_KEY]
    what = data.draw(st.sampled_from(["value", "key", "signature", "public key", "other host's key", "append",
                                      "truncate", "move"]))
    index, bit = data.draw(st.integers(0, 10**6)), data.draw(st.integers(0, 7))
    if what == "value":
        value = flip(value, index, bit) if value else b"x"
    elif what == "key":
        key = flip(key, index, bit)
    elif what == "signature":
        sig = flip(sig, index, bit)
    elif what == "public key":
        pub = flip(pub, index, bit)
    elif what == "other host's key":  # a valid key of another host, with this message's signature
        pub = KEYS.key_for(key + b"-other").public
    elif what == "append":
        value = value + data.draw(st.binary(min_size=1, max_size=8))
    elif what == "truncate":
        value = value[:-1] if value else b"\x00"
    else:  # the same signed value under another host's key: the signature cannot be moved
        key = key + data.draw(st.binary(min_size=1, max_size=4))
    got = verify([(HEADER_SIGNATURE, sig), (HEADER_PUBLIC_KEY, pub)], key, value)
    assert got.status is Status.INVALID, what
    assert got.reason


@given(hosts, values, st.sampled_from(["no signature", "no key", "two signatures", "short signature", "short key",
                                       "empty"]))
@settings(max_examples=EXAMPLES // 2, deadline=None)
def test_malformed_headers_are_invalid_not_errors(key: bytes, value: bytes, how: str) -> None:
    sig, pub = (v for _, v in KEYS.headers(key, value))
    headers = {
        "no signature": [(HEADER_PUBLIC_KEY, pub)],
        "no key": [(HEADER_SIGNATURE, sig)],
        "two signatures": [(HEADER_SIGNATURE, sig), (HEADER_SIGNATURE, sig), (HEADER_PUBLIC_KEY, pub)],
        "short signature": [(HEADER_SIGNATURE, sig[:63]), (HEADER_PUBLIC_KEY, pub)],
        "short key": [(HEADER_SIGNATURE, sig), (HEADER_PUBLIC_KEY, pub[:31])],
        "empty": [(HEADER_SIGNATURE, b""), (HEADER_PUBLIC_KEY, b"")],
    }[how]
    assert verify(headers, key, value).status is Status.INVALID


seqs = st.integers(min_value=0, max_value=2**63 - 1)


@given(hosts, values, seqs, st.data())
@settings(max_examples=200, deadline=None)
def test_the_written_announcement_is_signed_too(key: bytes, value: bytes, written: int, data: st.DataObject) -> None:
    headers = KEYS.headers(key, value, written)
    got = verify(headers, key, value)
    assert got.status is Status.SIGNED and got.written == written
    others = [(k, v) for k, v in headers if k != HEADER_WRITTEN]
    assert verify(others, key, value).status is Status.INVALID  # stripped: the signature covered it
    other = data.draw(seqs.filter(lambda n: n != written))
    assert verify([*others, (HEADER_WRITTEN, str(other).encode())], key, value).status is Status.INVALID
    plain = KEYS.headers(key, value)  # a message signed without it cannot be given one
    assert verify([*plain, (HEADER_WRITTEN, str(written).encode())], key, value).status is Status.INVALID
    assert verify(plain, key, value).written is None


@given(hosts, values, st.one_of(st.binary(max_size=30), st.text(max_size=30).map(str.encode)))
@settings(max_examples=200, deadline=None)
def test_a_malformed_written_header_is_invalid_not_an_error(key: bytes, value: bytes, raw: bytes) -> None:
    headers = [(k, v) for k, v in KEYS.headers(key, value, 7) if k != HEADER_WRITTEN]
    got = verify([*headers, (HEADER_WRITTEN, raw)], key, value)
    # the signature covers the number, not its text: "7" and "07" announce the same seq
    announces_7 = raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) == 7
    assert got.status is (Status.SIGNED if announces_7 else Status.INVALID)
    twice = verify([*headers, (HEADER_WRITTEN, b"7"), (HEADER_WRITTEN, b"7")], key, value)
    assert twice.status is Status.INVALID


def test_unsigned_messages_are_unsigned() -> None:
    for headers in (None, [], [("reason", b"x")], {}):
        assert verify(headers, b"h", b"[]").status is Status.UNSIGNED
    assert verify([(b"herdwatch-sig", b"")], b"h", b"[]").status is Status.INVALID  # bytes names count too


def test_signatures_are_deterministic_so_a_resent_spool_record_is_identical() -> None:
    assert KEYS.headers(b"h", b"[1]") == KEYS.headers(b"h", b"[1]")
    assert SimulatedKeys(b"other").key_for(b"h").public != KEYS.key_for(b"h").public


def test_judge_is_trust_on_first_use() -> None:
    a, b = KEYS.key_for(b"a").public, KEYS.key_for(b"b").public
    signed_a, signed_b = Signature(Status.SIGNED, a), Signature(Status.SIGNED, b)
    unsigned = Signature(Status.UNSIGNED)
    bad = Signature(Status.INVALID, a, "the signature does not match the message key and value")
    assert judge("h", signed_a, None, True).pin == a  # first use pins
    first = judge("h", signed_a, a, True)
    assert first.accepted and first.pin is None  # same key: nothing new to pin
    other = judge("h", signed_b, a, True)
    assert not other.accepted and other.reason.startswith(REASON_PREFIX)
    assert fingerprint(a) in other.reason and fingerprint(b) in other.reason
    assert not judge("h", bad, None, False).accepted  # a bad signature is refused whatever the setting
    assert not judge("h", unsigned, None, True).accepted  # unsigned, signatures required
    assert judge("h", unsigned, None, False) .accepted  # unsigned third-party producer, allowed
    assert not judge("h", unsigned, a, False).accepted  # but a host that signed must go on signing
    # an operator's re-pin lets exactly the named key take over
    assert judge("h", signed_b, a, True, {"h": fingerprint(b)}).pin == b
    assert not judge("h", signed_b, a, True, {"h": fingerprint(a)}).accepted
    assert not judge("h", signed_b, a, True, {"other": fingerprint(b)}).accepted


def test_fingerprints_look_like_ssh_ones() -> None:
    fp = fingerprint(KEYS.key_for(b"h").public)
    assert fp.startswith("SHA256:") and len(fp) == 7 + 43 and "=" not in fp
    assert fingerprint(None) == "none"


# ---- the check itself: libsodium (PyNaCl), measured against OpenSSL's (cryptography) ------------------------

def openssl_accepts(signature: bytes, message: bytes, public_key: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=512), st.data())
@settings(max_examples=EXAMPLES, deadline=None)
def test_the_check_agrees_with_openssl_on_honest_tampered_and_random_signatures(
        seed: bytes, message: bytes, data: st.DataObject) -> None:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signature = private.sign(message)
    how = data.draw(st.sampled_from(["honest", "signature bit", "message bit", "key bit", "random signature",
                                     "random key"]))
    index, bit = data.draw(st.integers(0, 10**6)), data.draw(st.integers(0, 7))
    if how == "signature bit":
        signature = flip(signature, index, bit)
    elif how == "message bit":
        message = flip(message, index, bit) if message else b"\x00"
    elif how == "key bit":
        public = flip(public, index, bit)
    elif how == "random signature":
        signature = data.draw(st.binary(min_size=64, max_size=64))
    elif how == "random key":
        public = data.draw(st.binary(min_size=32, max_size=32))
    got = signature_matches(signature, message, public)
    assert got == openssl_accepts(signature, message, public), how
    assert got is (how == "honest")


@given(st.binary(max_size=256), st.sampled_from([
    b"\x01" + bytes(31),  # the identity point
    bytes(32),  # order 4 (y = 0)
    b"\xec" + b"\xff" * 30 + b"\x7f",  # order 2 (y = -1)
]))
@settings(max_examples=EXAMPLES // 4, deadline=None)
def test_a_small_order_key_cannot_sign_everything(message: bytes, small_order_key: bytes) -> None:
    """With a small-order public key, R = the same point and S = 0 satisfy Ed25519's equation for every
    message; OpenSSL accepts the identity point's, libsodium refuses them all."""
    forged = small_order_key + bytes(32)
    if small_order_key == b"\x01" + bytes(31):
        assert openssl_accepts(forged, message, small_order_key)  # what the stricter check keeps out
    assert not signature_matches(forged, message, small_order_key)
    host = b"web-1"
    headers = [(HEADER_SIGNATURE, small_order_key + bytes(32)), (HEADER_PUBLIC_KEY, small_order_key)]
    assert verify(headers, host, message).status is Status.INVALID


def test_a_missing_pynacl_is_a_fix_it_error_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    load_verifier.cache_clear()
    monkeypatch.setitem(sys.modules, "nacl.bindings", None)  # an install without PyNaCl
    try:
        with pytest.raises(ImportError, match=r"pip install 'herdwatch\[streams\]'"):
            load_verifier()
    finally:
        load_verifier.cache_clear()
