"""Host keys for simulated hosts: derived from the host id and a seed, so a simulated fleet signs its
batches like real agents do (the demo and the tests exercise the real verification and pinning).

Anyone can derive these keys: they are for simulations, tests and demos only, never for real hosts (a real
agent creates its own key, collectors.hostkey).
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collectors.hostkey import HostKey

SIMULATION_SEED = b"herdwatch-simulation"


class SimulatedKeys:
    """Per-host keys derived from the host id and a seed (public knowledge: simulations only)."""

    def __init__(self, seed: bytes = SIMULATION_SEED) -> None:
        self.seed = seed
        self._keys: dict[bytes, HostKey] = {}

    def key_for(self, host_id: bytes) -> HostKey:
        key = self._keys.get(host_id)
        if key is None:
            secret = hashlib.sha256(self.seed + b"\x00" + host_id).digest()
            key = self._keys[host_id] = HostKey(Ed25519PrivateKey.from_private_bytes(secret))
        return key

    def headers(self, key: bytes | None, value: bytes, written: int | None = None) -> list[tuple[str, bytes]]:
        return self.key_for(key or b"").headers(key, value, written)


SIMULATED = SimulatedKeys()
"""The simulator's signer."""
