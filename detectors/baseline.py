"""The cohort baseline: who is in each cohort, which features its live hosts show, their latest metrics.

Durable state lives in `store` (any MutableMapping: a dict, or a Faust table in the stream workers) as
many small JSON-able values (keys and records: store_keys.py, records.py):

    HOST            h|<host>              HostEntry: image, family, first and last seen (last written
                                          every touch_every_s)
    HOST_FEATURES   x|<host>              the host's current feature list (written when it changes)
    COHORT_SIZE     n|<image>             live hosts in the cohort
    FEATURE_COUNT   f|<image>|<feature>   FeatureCount: hosts showing it, first seen (deleted when no
                                          live host shows it)
    HOST_METRICS    m|<image>|<host>      MetricReport: latest metrics of a live host
    IMAGE           i|<family>|<image>    first seen of an image in its family

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

from detectors.records import FeatureCount, HostEntry, MetricReport
from detectors.store_keys import (
    COHORT_SIZE,
    FEATURE_COUNT,
    HOST,
    HOST_FEATURES,
    HOST_METRICS,
    IMAGE,
    family_of_key,
    owner_of_key,
)
from detectors.types import Observation


def _intern(feature: str) -> str:
    """One shared string per feature (thousands of hosts hold the same few hundred)."""
    return sys.intern(str(feature))


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
        touch_every_s: float = 120.0,
        family: str | None = None,
    ) -> None:
        self.store: MutableMapping[str, Any] = {} if store is None else store
        self.touch_every_s = float(touch_every_s)
        """How often a host's stored entry (last seen) is rewritten: memory always has the newest. The stored
        copy serves an engine rebuilt from the store, and in the stream workers host timeouts are the cohort
        stage's (members table), so every metric report rewriting it (at a 30 s cadence) was a changelog
        message per report for nothing."""
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
            images = {IMAGE.parse(k)[1] for k, _ in items if IMAGE.holds(k) and IMAGE.parse(k)[0] == self.family}
            hosts = {
                HOST.parse(k)[0] for k, v in items if HOST.holds(k) and HostEntry.from_json(v).family == self.family
            }
        for key, value in items:
            kf = family_of_key(key)
            if kf is None or (images is not None and hosts is not None and not self._mine(key, images, hosts)):
                continue
            if kf is HOST:
                (host,) = HOST.parse(key)
                e = HostEntry.from_json(value)
                self.hosts[host] = HostRec(e.image, e.family, e.first, e.last)
                self.members.setdefault(e.image, set()).add(host)
            elif kf is HOST_FEATURES:
                (host,) = HOST_FEATURES.parse(key)
                self.feats[host] = {_intern(f) for f in value}
            elif kf is FEATURE_COUNT:
                image, feat = FEATURE_COUNT.parse(key)
                c = FeatureCount.from_json(value)
                self.counts.setdefault(image, {})[_intern(feat)] = [float(c.hosts), c.first]
            elif kf is HOST_METRICS:
                image, host = HOST_METRICS.parse(key)
                m = MetricReport.from_json(value)
                self.metrics.setdefault(image, {})[host] = (m.time, m.values)
            elif kf is IMAGE:
                family, image = IMAGE.parse(key)
                self.images.setdefault(family, {})[image] = float(value)

    def _mine(self, key: str, images: Container[str], hosts: Container[str]) -> bool:
        owner = owner_of_key(key)
        if owner is None:
            return True
        kind, name = owner
        if kind == "host":
            return name in hosts
        if kind == "image":
            return name in images
        return name == self.family

    def owns(self, key: str) -> bool:
        """True if a store key belongs to this baseline's family (always, without a family filter)."""
        if self.family is None:
            return True
        return self._mine(key, self.images.get(self.family, {}), self.hosts)

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
    def learn(
        self,
        obs: Observation,
        now: float | None = None,
        store_metrics: bool = True,
    ) -> bool:
        """Fold one observation into the baseline. Returns True if the host just joined its cohort.

        `store_metrics=False`: the caller writes the host's latest metrics to the store itself (the engine
        does, with the reports still waiting to be scored)."""
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
                self.store[HOST.key(host)] = HostEntry(rec.image, rec.family, rec.first, t).to_json()
        if obs.added or obs.removed:
            self._apply_features(host, rec.image, obs.added, obs.removed, t)
        if obs.metrics:
            self.metrics.setdefault(rec.image, {})[host] = (t, obs.metrics)
            if store_metrics:
                self.store[HOST_METRICS.key(rec.image, host)] = MetricReport(t, obs.metrics).to_json()
        return joined

    def _join(self, host: str, image: str, family: str, t: float) -> HostRec:
        rec = HostRec(image, family, t, t)
        self.hosts[host] = rec
        self.store[HOST.key(host)] = HostEntry(image, family, t, t).to_json()
        members = self.members.setdefault(image, set())
        members.add(host)
        self.store[COHORT_SIZE.key(image)] = len(members)
        fam = self.images.setdefault(family, {})
        if image not in fam:
            fam[image] = t
            self.store[IMAGE.key(family, image)] = t
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
                    store.pop(FEATURE_COUNT.key(image, f), None)
                else:
                    e[0] -= 1
                    store[FEATURE_COUNT.key(image, f)] = FeatureCount(int(e[0]), e[1]).to_json()
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
                store[FEATURE_COUNT.key(image, f)] = FeatureCount(int(e[0]), e[1]).to_json()
        if changed:
            store[HOST_FEATURES.key(host)] = list(feats)

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
        self.store.pop(HOST_FEATURES.key(host), None)
        self.store.pop(HOST.key(host), None)
        members = self.members.get(image, set())
        members.discard(host)
        self.store[COHORT_SIZE.key(image)] = len(members)
        if image in self.metrics:
            self.metrics[image].pop(host, None)
        self.store.pop(HOST_METRICS.key(image, host), None)
        self.version += 1
        return rec

    def silent_hosts(self, now: float, timeout_s: float) -> list[str]:
        return [h for h, rec in self.hosts.items() if now - rec.last > timeout_s]
