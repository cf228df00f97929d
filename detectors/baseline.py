"""The cohort baseline: who is in each cohort, which features its live hosts show, their latest metrics.

Durable state lives in `store` (any MutableMapping: a dict, or a Faust table in the stream workers) as
many small JSON-able values:

    "h|<host>"            [image, family, first_seen, last_seen]   (last_seen written every touch_every_s)
    "x|<host>"            the host's current feature list          (written when its features change)
    "n|<image>"           live hosts in the cohort
    "f|<image>|<feature>" [hosts showing it, first seen]           (deleted when no live host shows it)
    "m|<image>|<host>"    [time, {metric: value}]                  (latest metrics of a live host)
    "i|<family>|<image>"  first seen of an image in its family

Everything else on the instance is a cache rebuilt from the store by `load()`.

Memory bound: a cohort holds one counter per distinct feature shown by a live host (features leave with
their last host, and departed or silent hosts leave the cohort), one feature list and one metric vector
per live host. Hosts cap their behaviour features at host_state.MAX_FEATURES, so a cohort of H hosts
holds at most H * (MAX_FEATURES + state features) counters; in practice clones share almost all of them.
"""

from __future__ import annotations

import sys
from collections.abc import Container, MutableMapping
from typing import Any

from detectors.types import Observation

_intern = sys.intern


class HostRec:
    __slots__ = ("family", "first", "image", "last", "stored_last")

    def __init__(self, image: str, family: str, first: float, last: float) -> None:
        self.image = image
        self.family = family
        self.first = first
        self.last = last
        self.stored_last = last


class CohortBaseline:
    """Live membership, feature counts and latest metrics per cohort (image), kept in `store`."""

    def __init__(
        self,
        store: MutableMapping[str, Any] | None = None,
        touch_every_s: float = 30.0,
        family: str | None = None,
    ) -> None:
        self.store: MutableMapping[str, Any] = {} if store is None else store
        self.touch_every_s = float(touch_every_s)
        self.family = family
        """Rebuild caches only from this image family's keys (None: every key in the store)."""
        self._loaded = False
        self._reset_cache()

    def _reset_cache(self) -> None:
        self.hosts: dict[str, HostRec] = {}
        self.feats: dict[str, set[str]] = {}
        self.counts: dict[str, dict[str, list[float]]] = {}
        """image -> feature -> [count, first seen]."""
        self.members: dict[str, set[str]] = {}
        self.metrics: dict[str, dict[str, tuple[float, dict[str, float]]]] = {}
        self.images: dict[str, dict[str, float]] = {}
        """family -> image -> first seen."""
        self.version = 0
        """Bumped on every membership change (lets caches of derived statistics know they are stale)."""

    def __getstate__(self) -> dict[str, Any]:
        return {
            "store": dict(self.store) if not isinstance(self.store, dict) else self.store,
            "touch_every_s": self.touch_every_s,
            "family": self.family,
        }

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.store = d["store"]
        self.touch_every_s = d["touch_every_s"]
        self.family = d.get("family")
        self._loaded = False
        self._reset_cache()
        self.load()

    # ---- rebuilding the caches -------------------------------------------------------------------
    def load(self) -> None:
        """Rebuild every cache from the store (once; later calls are free)."""
        if self._loaded:
            return
        self._loaded = True
        self._reset_cache()
        items = list(self.store.items())
        images: set[str] | None = None
        hosts: set[str] | None = None
        if self.family is not None:  # only this family's keys (several engines may share one store)
            images = {k.split("|", 2)[2] for k, _ in items if k.startswith(f"i|{self.family}|")}
            hosts = {k[2:] for k, v in items if k.startswith("h|") and v[1] == self.family}
        for key, value in items:
            tag, _, rest = key.partition("|")
            if images is not None and hosts is not None and not self._mine(tag, rest, images, hosts):
                continue
            if tag == "h":
                image, family, first, last = value
                self.hosts[rest] = HostRec(image, family, float(first), float(last))
                self.members.setdefault(image, set()).add(rest)
            elif tag == "x":
                self.feats[rest] = {_intern(f) for f in value}
            elif tag == "f":
                image, _, feat = rest.partition("|")
                self.counts.setdefault(image, {})[_intern(feat)] = [float(value[0]), float(value[1])]
            elif tag == "m":
                image, _, host = rest.partition("|")
                self.metrics.setdefault(image, {})[host] = (float(value[0]), dict(value[1]))
            elif tag == "i":
                family, _, image = rest.partition("|")
                self.images.setdefault(family, {})[image] = float(value)

    def _mine(self, tag: str, rest: str, images: Container[str], hosts: Container[str]) -> bool:
        if tag in ("h", "x", "s", "k"):
            return rest.split("|", 1)[0] in hosts
        if tag in ("f", "m", "n", "p"):
            return rest.split("|", 1)[0] in images
        if tag in ("i", "r"):
            return rest.split("|", 1)[0] == self.family
        return True

    def owns(self, key: str) -> bool:
        """True if a store key belongs to this baseline's family (always, without a family filter)."""
        if self.family is None:
            return True
        tag, _, rest = key.partition("|")
        images = self.images.get(self.family, {})
        if tag == "s" and rest.startswith("image:"):
            return rest[6:].split("|", 1)[0] in images
        return self._mine(tag, rest, images, self.hosts)

    # ---- queries ----------------------------------------------------------------------------------
    def n(self, image: str) -> int:
        m = self.members.get(image)
        return len(m) if m else 0

    def count(self, image: str, feature: str) -> int:
        c = self.counts.get(image)
        if not c:
            return 0
        e = c.get(feature)
        return int(e[0]) if e else 0

    def first_seen(self, image: str, feature: str) -> float | None:
        e = self.counts.get(image, {}).get(feature)
        return e[1] if e else None

    def family_n(self, family: str) -> int:
        return sum(self.n(i) for i in self.images.get(family, {}))

    def family_count(self, family: str, feature: str) -> int:
        return sum(self.count(i, feature) for i in self.images.get(family, {}))

    def host_features(self, host: str) -> set[str]:
        return self.feats.get(host, set())

    def peer_values(
        self, image: str, metric: str, now: float, window_s: float, exclude: str | None = None
    ) -> list[float]:
        """Latest value of `metric` on each live host of the cohort reported within `window_s`."""
        out = []
        for host, (t, values) in self.metrics.get(image, {}).items():
            if host != exclude and now - t <= window_s:
                v = values.get(metric)
                if v is not None:
                    out.append(v)
        return out

    # ---- learning ---------------------------------------------------------------------------------
    def learn(self, obs: Observation, now: float | None = None) -> bool:
        """Fold one observation into the baseline. Returns True if the host just joined its cohort."""
        self.load()
        t = obs.time.timestamp() if now is None else now
        host = obs.host_id
        rec = self.hosts.get(host)
        joined = False
        if obs.gone:
            if rec is not None:
                self.leave(host)
            return False
        if rec is not None and rec.image != obs.image_id:
            self.leave(host)
            rec = None
        if rec is None:
            rec = self._join(host, obs.image_id, obs.image_family, t)
            joined = True
        elif t > rec.last:
            rec.last = t
            if t - rec.stored_last >= self.touch_every_s:
                rec.stored_last = t
                self.store[f"h|{host}"] = [rec.image, rec.family, rec.first, t]
        if obs.added or obs.removed:
            self._apply_features(host, rec.image, obs.added, obs.removed, t)
        if obs.metrics:
            self.metrics.setdefault(rec.image, {})[host] = (t, obs.metrics)
            self.store[f"m|{rec.image}|{host}"] = [t, obs.metrics]
        return joined

    def _join(self, host: str, image: str, family: str, t: float) -> HostRec:
        rec = HostRec(image, family, t, t)
        self.hosts[host] = rec
        self.store[f"h|{host}"] = [image, family, t, t]
        members = self.members.setdefault(image, set())
        members.add(host)
        self.store[f"n|{image}"] = len(members)
        fam = self.images.setdefault(family, {})
        if image not in fam:
            fam[image] = t
            self.store[f"i|{family}|{image}"] = t
        self.version += 1
        return rec

    def _apply_features(
        self, host: str, image: str, added: tuple[str, ...], removed: tuple[str, ...], t: float
    ) -> None:
        feats = self.feats.get(host)
        if feats is None:
            feats = self.feats[host] = set()
        counts = self.counts.get(image)
        if counts is None:
            counts = self.counts[image] = {}
        store = self.store
        changed = False
        for f in removed:
            if f in feats:
                feats.discard(f)
                changed = True
                e = counts.get(f)
                if e is None:
                    continue
                if e[0] <= 1:
                    del counts[f]
                    store.pop(f"f|{image}|{f}", None)
                else:
                    e[0] -= 1
                    store[f"f|{image}|{f}"] = [e[0], e[1]]
        for f in added:
            if f not in feats:
                f = _intern(f)
                feats.add(f)
                changed = True
                e = counts.get(f)
                if e is None:
                    e = counts[f] = [1, t]
                else:
                    e[0] += 1
                store[f"f|{image}|{f}"] = [e[0], e[1]]
        if changed:
            store[f"x|{host}"] = list(feats)

    def leave(self, host: str) -> HostRec | None:
        """Remove a departed host and everything it contributed."""
        self.load()
        rec = self.hosts.pop(host, None)
        if rec is None:
            return None
        image = rec.image
        feats = self.feats.get(host)
        if feats:
            self._apply_features(host, image, (), tuple(feats), rec.last)
        self.feats.pop(host, None)
        self.store.pop(f"x|{host}", None)
        self.store.pop(f"h|{host}", None)
        members = self.members.get(image, set())
        members.discard(host)
        self.store[f"n|{image}"] = len(members)
        if image in self.metrics:
            self.metrics[image].pop(host, None)
        self.store.pop(f"m|{image}|{host}", None)
        self.version += 1
        return rec

    def silent_hosts(self, now: float, timeout_s: float) -> list[str]:
        return [h for h, rec in self.hosts.items() if now - rec.last > timeout_s]
