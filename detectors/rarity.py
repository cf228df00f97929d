"""Cohort rarity: a behaviour feature (process, parent->child, listener, destination, login) that few of
the cohort's live hosts show."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import replace
from typing import Any

from contract.findings import Severity
from detectors.base import Detector, hhmmss
from detectors.baseline import CohortBaseline
from detectors.features import IMMEDIATE_KINDS, describe, kind_of
from detectors.records import FeatureHistory, ImageLineage
from detectors.store_keys import HISTORY, LINEAGE
from detectors.types import Observation

_SUSPICIOUS_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/user/")
_SHELLS = ("/sh", "/bash", "/dash", "/zsh", "/nc", "/ncat", "/socat", "/python3", "/perl")


class CohortRarity(Detector):
    """Scores a feature by how few of the cohort's hosts show it: score = 1 - hosts showing / cohort size.

    A feature is *rare* when at most max(1, rare_fraction * n) of the n live hosts show it. Cohorts with
    fewer than `min_hosts` hosts are compared with their whole image family instead.
    """

    name = "rarity"

    def __init__(
        self,
        rare_fraction: float = 0.1,
        min_hosts: int = 3,
        kinds: frozenset[str] = IMMEDIATE_KINDS,
        baseline: CohortBaseline | None = None,
        campaign_share: float = 0.5,
    ) -> None:
        super().__init__(baseline)
        self.campaign_share = float(campaign_share)
        self.rare_fraction = float(rare_fraction)
        self.min_hosts = int(min_hosts)
        self.kinds = frozenset(kinds)

    def rare_max(self, n: int) -> int:
        return max(1, int(self.rare_fraction * n))

    def campaign_max(self, n: int) -> int:
        """Most hosts a behaviour new to the image may reach and still be a campaign (not a deploy)."""
        return max(self.rare_max(n), int(self.campaign_share * n - 1e-9))

    def counts(self, image: str, family: str, feature: str) -> tuple[int, int, str]:
        """(hosts showing the feature, hosts compared, scope) with scope "cohort" or "family"."""
        b = self.baseline
        n = b.n(image)
        if n >= self.min_hosts:
            return b.count(image, feature), n, "cohort"
        fn = b.family_n(family)
        if fn > n:
            return b.family_count(family, feature), fn, "family"
        return b.count(image, feature), n, "cohort"

    def feature_score(self, image: str, family: str, feature: str) -> float:
        count, n, _ = self.counts(image, family, feature)
        if n == 0:
            return 0.0
        return max(0.0, 1.0 - count / n)

    def score_one(self, obs: Observation) -> float:
        best = 0.0
        for f in obs.added:
            if kind_of(f) in self.kinds:
                best = max(best, self.feature_score(obs.image_id, obs.image_family, f))
        return best

    @staticmethod
    def severity(feature: str) -> Severity:
        kind = kind_of(feature)
        body = feature[len(kind) + 1 :]
        if kind == "proc":
            exe = body.split("|", 1)[0]
            if exe.startswith(_SUSPICIOUS_DIRS) or "/." in exe:
                return Severity.CRITICAL
            return Severity.HIGH
        if kind == "pc":
            child = body.partition(">")[2]
            return Severity.CRITICAL if child.endswith(_SHELLS) else Severity.MEDIUM
        if kind == "listen":
            return Severity.HIGH
        if kind == "dest":
            return Severity.HIGH if "@public" not in body and "@10." not in body else Severity.MEDIUM
        return Severity.MEDIUM

    @staticmethod
    def sticky(feature: str) -> bool:
        """A program run from /tmp, /dev/shm or a hidden directory: once reported, never the image's behaviour
        by spreading (ImageHistory). Shells started by services are not: job runners start them all the time."""
        return kind_of(feature) == "proc" and CohortRarity.severity(feature) is Severity.CRITICAL

    @staticmethod
    def explain(
        feature: str,
        host: str,
        image: str,
        count: int,
        n: int,
        scope: str,
        scope_name: str,
        first_seen: float | None,
    ) -> str:
        where = (
            f"image {image}"
            if scope == "cohort"
            else f"image family {scope_name} (image {image} has too few hosts to compare with on its own)"
        )
        first = f" (first seen {hhmmss(first_seen)} UTC)" if first_seen else ""
        others = "none of its clones shows it" if count <= 1 else f"only {count - 1} of its clones show it"
        return (
            f"{describe(feature)} seen on {count} of {n} hosts of {where}{first}: {others}. "
            f"Check host {host}: who started it and why."
        )


_TOUCH_S = 300.0
"""A history entry's last-seen time is rewritten at most this often (store writes stay rare)."""

_LINEAGE_MAX = 4
"""Images an image remembers replacing (the newest kept), and how far back a lookup goes."""


class ImageHistory:
    """Behaviour each image has shown within `history_s`, kept in the store (key HISTORY, FeatureHistory).

    A feature enters the history when its first episode is judged (common, spread, gone again or reported)
    and stays while a host of the image shows it, then `history_s` longer. A feature in the history is known
    behaviour of the image: not rare, even if no live host shows it right now (a periodic job's short-lived
    child that the collector catches on some clones at some times). A feature that was reported is
    different: for `campaign_window_s` after the report more hosts gaining it are named together as a
    campaign; after that, another host showing it makes it the image's behaviour (a host it was reported on
    showing it again is reported again, once the finding's suppression expired). A *sticky* feature (a
    program run from /tmp or a hidden directory: CohortRarity.sticky) never becomes the image's behaviour
    that way: its campaign window is history_s, so the same miner on another host half an hour later is
    reported again, as a campaign naming the hosts it was reported on.
    Bounded per image: at most `max_features` entries, the least recently seen evicted first.

    A new image of a family starts with the history of the image(s) it replaces (`replaces`, key LINEAGE):
    what the previous version did within `history_s` is not new for the family (a periodic job's child first
    caught on one host of the new cohort). Not inherited: what was reported on the old image within its
    `campaign_window_s`, what was reported on the same host, and a sticky feature that was reported. An
    inherited feature becomes the new image's own entry the first time it is asked about.
    """

    def __init__(
        self,
        store: MutableMapping[str, Any],
        history_s: float = 86400.0,
        campaign_window_s: float = 600.0,
        max_features: int = 4096,
    ) -> None:
        self.store = store
        self.history_s = float(history_s)
        self.campaign_window_s = float(campaign_window_s)
        self.max_features = int(max_features)
        self.entries: dict[str, dict[str, FeatureHistory]] = {}
        """image -> feature -> its history (a cache of the store's HISTORY keys)."""
        self.lineage: dict[str, tuple[str, ...]] = {}
        """image -> the images it replaced, newest last (a cache of the store's LINEAGE keys)."""

    @staticmethod
    def holds(key: str) -> bool:
        """True for the store keys this history keeps (HISTORY and LINEAGE)."""
        return HISTORY.holds(key) or LINEAGE.holds(key)

    def load(self, key: str, value: Any) -> None:
        if LINEAGE.holds(key):
            (image,) = LINEAGE.parse(key)
            self.lineage[image] = ImageLineage.from_json(value).replaced
            return
        image, feature = HISTORY.parse(key)
        self.entries.setdefault(image, {})[feature] = FeatureHistory.from_json(value)

    def replaces(self, new: str, old: str) -> None:
        """Image `new` replaces image `old` in their family (a rollout started): `old`'s history counts for it."""
        if new == old:
            return
        before = self.lineage.get(new, ())
        after = (*[i for i in before if i != old], old)[-_LINEAGE_MAX:]
        if after != before:
            self.lineage[new] = after
            self.store[LINEAGE.key(new)] = ImageLineage(after).to_json()

    def inherited(self, image: str, feature: str, host: str, now: float, sticky: bool = False) -> str | None:
        """The image `image` replaced (directly or through the images it replaced, newest first) that showed
        `feature` within history_s and did not report it within its campaign window nor on `host` (nor ever,
        if `sticky`)."""
        seen = {image}
        todo = list(reversed(self.lineage.get(image, ())))
        while todo and len(seen) <= _LINEAGE_MAX:
            old = todo.pop(0)
            if old in seen:
                continue
            seen.add(old)
            h = self.get(old, feature)
            if h is not None and now - h.last <= self.history_s:
                reported_here = h.reported > 0 and (sticky or now - h.reported <= self.campaign_window_s
                                                    or host in h.hosts)
                if not reported_here:
                    return old
            todo += reversed(self.lineage.get(old, ()))
        return None

    def get(self, image: str, feature: str) -> FeatureHistory | None:
        return self.entries.get(image, {}).get(feature)

    def _put(self, image: str, feature: str, h: FeatureHistory) -> None:
        self.entries.setdefault(image, {})[feature] = h
        self.store[HISTORY.key(image, feature)] = h.to_json()

    def known(self, image: str, feature: str, host: str, now: float, shown_elsewhere: bool,
              sticky: bool = False) -> bool:
        """True if the image has shown the feature within history_s (a reported or sticky feature: see the
        class)."""
        h = self.get(image, feature)
        if h is None and self.inherited(image, feature, host, now, sticky) is not None:
            self._put(image, feature, FeatureHistory(first=now, last=now))
            return True
        if h is None or not (shown_elsewhere or now - h.last <= self.history_s):
            return False
        if h.reported:
            if sticky or now - h.reported <= self.campaign_window_s or host in h.hosts:
                return False
            self._put(image, feature, replace(h, last=now, reported=0.0, hosts=()))  # the image's after all
        return True

    def campaign_hosts(self, image: str, feature: str, now: float, sticky: bool = False) -> tuple[str, ...]:
        """Hosts the feature was reported on within campaign_window_s (within history_s if `sticky`; empty
        otherwise)."""
        h = self.get(image, feature)
        window = self.history_s if sticky else self.campaign_window_s
        if h is None or not h.reported or now - h.reported > window:
            return ()
        return h.hosts

    def seen(self, image: str, feature: str, now: float) -> None:
        """A host of the image showed the feature at `now` (or stopped showing it then)."""
        h = self.get(image, feature)
        if h is not None and now - h.last >= _TOUCH_S:
            self._put(image, feature, replace(h, last=now))

    def judged(self, image: str, feature: str, now: float, reported: list[str] | tuple[str, ...] = ()) -> None:
        """The feature's episode was judged at `now`; `reported`: the hosts it was reported on."""
        h = self.get(image, feature)
        if h is None or now - h.last > self.history_s:
            h = FeatureHistory(first=now, last=now)
        else:
            h = replace(h, last=max(h.last, now))
        if reported:
            hosts = list(dict.fromkeys([*h.hosts, *reported]))[:64]
            h = replace(h, reported=now, hosts=tuple(hosts))
        self._put(image, feature, h)
        entries = self.entries[image]
        if len(entries) > self.max_features:  # evict the least recently seen tenth
            drop = sorted(entries, key=lambda f: entries[f].last)[: max(1, len(entries) // 10)]
            for f in drop:
                self.forget(image, f)

    def forget(self, image: str, feature: str) -> None:
        self.entries.get(image, {}).pop(feature, None)
        self.store.pop(HISTORY.key(image, feature), None)

    def sweep(self, image: str, now: float, shown: Callable[[str], bool]) -> None:
        """Refresh entries a live host still shows; drop those nobody showed for history_s."""
        for feature, h in list(self.entries.get(image, {}).items()):
            if shown(feature):
                self.seen(image, feature, now)
            elif now - h.last > self.history_s:
                self.forget(image, feature)

    def forget_image(self, image: str) -> None:
        for feature in list(self.entries.get(image, {})):
            self.forget(image, feature)
        self.entries.pop(image, None)
        if self.lineage.pop(image, None) is not None:
            self.store.pop(LINEAGE.key(image), None)
