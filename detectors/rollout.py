"""Rollout awareness: a new image replacing an established one within an image family.

State per family in the store under its ROLLOUT key (store_keys.py): a RolloutState (records.py).
A rollout starts when the first host of an image newer than the family's established image (the largest
cohort with at least `min_hosts` hosts) appears. Once the new cohort reaches `min_hosts`, what most of
its hosts show and the old cohort does not (and the reverse) is reported once as the rollout's diff;
the engine holds rare-feature judgements for the new cohort until then. Completed when the old cohort is
empty, or when the shares have not moved for `complete_after_s` and the new image has at least
`complete_share` of the two cohorts' hosts or the old one is down to a rare few (max(1, rare_fraction x
hosts)); the hosts left behind are then stale; rolled back when the new
cohort empties while the old remains. Hosts still on an image the family rolled away from are stale.

A host that joins an image the family rolled away from (after the rollout completed) may be the first of a
rollback: its stale judgement waits `return_s`. When `min_hosts` hosts came back to that image within
`return_s`, the completed rollout is reported rolled back and the way back is followed like a rollout (it
completes, and the image it replaces is then the stale one); otherwise the returning hosts are stale.
"""

from __future__ import annotations

from contract.findings import RolloutEvent, RolloutStatus
from detectors.base import Detector, to_datetime
from detectors.baseline import CohortBaseline
from detectors.features import describe
from detectors.records import RolloutState
from detectors.store_keys import ROLLOUT
from detectors.types import Observation


class RolloutTracker(Detector):
    name = "rollout"

    def __init__(
        self,
        min_hosts: int = 3,
        majority: float = 0.5,
        rare_fraction: float = 0.1,
        complete_share: float = 0.9,
        milestones: tuple[float, ...] = (0.25, 0.5, 0.75),
        hold_s: float = 1800.0,
        complete_after_s: float = 300.0,
        max_diff: int = 200,
        baseline: CohortBaseline | None = None,
        return_s: float = 300.0,
    ) -> None:
        super().__init__(baseline)
        self.min_hosts = int(min_hosts)
        self.majority = float(majority)
        self.rare_fraction = float(rare_fraction)
        self.complete_share = float(complete_share)
        self.milestones = tuple(milestones)
        self.hold_s = float(hold_s)
        self.complete_after_s = float(complete_after_s)
        self.max_diff = int(max_diff)
        self.return_s = float(return_s)

    # ---- state -------------------------------------------------------------------------------------
    def state(self, family: str) -> RolloutState | None:
        """The family's latest rollout (a fresh copy: change it, then `_save` it)."""
        st = self.baseline.store.get(ROLLOUT.key(family))
        return RolloutState.from_json(st) if st else None

    def _save(self, family: str, st: RolloutState) -> None:
        self.baseline.store[ROLLOUT.key(family)] = st.to_json()

    def established(self, family: str, exclude: str | None = None) -> str | None:
        best, best_n = None, 0
        for image in self.baseline.images.get(family, {}):
            n = self.baseline.n(image)
            if image != exclude and n >= self.min_hosts and n > best_n:
                best, best_n = image, n
        return best

    # ---- questions the engine asks --------------------------------------------------------------
    def held(self, image: str, family: str, now: float) -> bool:
        """True while `image` is the new side of an active rollout below critical mass (hold judgements)."""
        st = self.state(family)
        return bool(
            st
            and st.active
            and st.new == image
            and self.baseline.n(image) < self.min_hosts
            and now - st.started < self.hold_s
        )

    def stale(self, image: str, family: str) -> str | None:
        """The image that replaced `image`, if the family completed a rollout away from it (None while hosts
        coming back to `image` may still turn out to be a rollback)."""
        st = self.state(family)
        if not st or image in st.back:
            return None
        return st.stale.get(image)

    def stale_images(self, family: str) -> dict[str, str]:
        """Images the family rolled away from whose hosts are stale now: old image -> the image that replaced it."""
        st = self.state(family)
        return {old: new for old, new in st.stale.items() if old not in st.back} if st else {}

    def learn_one(self, obs: Observation) -> None:
        """Standalone use: feed the baseline and follow the family's rollout."""
        if not self._owns:
            return
        t = obs.time.timestamp()
        if self.baseline.learn(obs, t):
            self.on_join(obs.image_id, obs.image_family, t)
        self.update(obs.image_family, t)

    def score_one(self, obs: Observation) -> float:
        return 1.0 if self.stale(obs.image_id, obs.image_family) else 0.0

    # ---- events -------------------------------------------------------------------------------------
    def on_join(self, image: str, family: str, now: float) -> list[RolloutEvent]:
        """A host joined `image`: start a rollout if the image is new in a family with an established one."""
        st = self.state(family)
        if st and st.active and image in (st.new, st.old):
            return []
        if st and st.status == RolloutStatus.COMPLETED and st.new == image:
            return []
        if st and image in st.stale:
            if not st.active:  # a host came back to an image rolled away from: a rollback, or a stale host
                st.back.setdefault(image, []).append(now)
                self._save(family, st)
            return []
        images = self.baseline.images.get(family, {})
        old = self.established(family, exclude=image)
        if old is None or images.get(image, 0.0) <= images.get(old, 0.0) or self.baseline.n(image) > 1:
            return []
        stale = dict(st.stale) if st else {}
        self._save(family, RolloutState(old=old, new=image, status=RolloutStatus.STARTED, started=now, stale=stale))
        n_old = self.baseline.n(old)
        share = 1 / (1 + n_old)
        return [
            RolloutEvent(
                family,
                old,
                image,
                RolloutStatus.STARTED,
                share,
                to_datetime(now),
                f"rollout started in family {family}: first host of image {image} appeared next "
                f"to {n_old} hosts of image {old}; judgements of the new image wait until it has "
                f"{self.min_hosts} hosts",
            )
        ]

    def update(self, family: str, now: float) -> list[RolloutEvent]:
        st = self.state(family)
        if st and st.back:
            st, back = self._returns(family, st, now)
            if back:
                return back
        if not st or not st.active:
            return []
        old, new = st.old, st.new
        n_new, n_old = self.baseline.n(new), self.baseline.n(old)
        share = n_new / (n_new + n_old) if n_new + n_old else 0.0
        out: list[RolloutEvent] = []
        t = to_datetime(now)
        st.peak = max(st.peak, n_new)
        if n_new == 0 and n_old > 0:
            st.status = RolloutStatus.ROLLED_BACK
            st.share = 0.0
            self._save(family, st)
            return [
                RolloutEvent(
                    family,
                    old,
                    new,
                    RolloutStatus.ROLLED_BACK,
                    0.0,
                    t,
                    f"rollout of image {new} in family {family} rolled back: its hosts are gone "
                    f"(peak {st.peak}) while {n_old} hosts still run image {old}",
                )
            ]
        changed = abs(share - st.share) > 1e-9
        st.share = share
        if changed:
            st.moved = now
        if st.diff is None and n_new >= self.min_hosts:
            diff = self.diff(old, new)
            st.diff = {k: len(v) for k, v in diff.items()}
            st.status = RolloutStatus.PROGRESS
            out.append(
                RolloutEvent(
                    family,
                    old,
                    new,
                    RolloutStatus.PROGRESS,
                    share,
                    t,
                    self._explain_diff(family, old, new, n_new, diff),
                    diff,
                )
            )
            changed = True
        if st.diff is not None:
            for m in self.milestones:
                if share >= m > st.milestone:
                    st.milestone = m
                    changed = True
                    if not out:
                        out.append(
                            RolloutEvent(
                                family,
                                old,
                                new,
                                RolloutStatus.PROGRESS,
                                share,
                                t,
                                f"rollout of image {new} in family {family}: {n_new} hosts "
                                f"({share:.0%}), {n_old} still on image {old}",
                            )
                        )
            stalled = now - (st.started if st.moved is None else st.moved) >= self.complete_after_s
            few_left = n_old <= max(1, int(self.rare_fraction * (n_new + n_old)))
            if n_old == 0 or (stalled and (share >= self.complete_share or few_left)):
                st.status = RolloutStatus.COMPLETED
                st.done = now
                stale = dict(st.stale)
                stale[old] = new
                st.stale = dict(list(stale.items())[-5:])  # the last few images rolled away from
                changed = True
                left = f"; {n_old} host(s) still run image {old} and are reported as stale" if n_old else ""
                what = "rollback to" if st.rollback else "rollout of"
                out.append(
                    RolloutEvent(
                        family,
                        old,
                        new,
                        RolloutStatus.COMPLETED,
                        share,
                        t,
                        f"{what} image {new} in family {family} completed at {share:.0%} ({n_new} hosts){left}",
                    )
                )
        if changed:
            self._save(family, st)
        return out

    def _returns(self, family: str, st: RolloutState, now: float) -> tuple[RolloutState, list[RolloutEvent]]:
        """Hosts coming back to images the family rolled away from: forget joins older than `return_s`; once
        `min_hosts` came back to one image within it, report the completed rollout rolled back and follow the
        way back as a rollout (the returning hosts are not stale)."""
        before = {k: list(ts) for k, ts in st.back.items()}
        for image in list(st.back):
            st.back[image] = [x for x in st.back[image] if now - x < self.return_s]
            if not st.back[image] or image not in st.stale:
                del st.back[image]
        found = next((i for i, ts in st.back.items() if len(ts) >= self.min_hosts), None)
        if found is None or st.active:
            if st.back != before:
                self._save(family, st)
            return st, []
        image = found
        current, came = st.stale[image], st.back[image]
        n_cur, n_back = self.baseline.n(current), self.baseline.n(image)
        share = n_back / (n_cur + n_back) if n_cur + n_back else 0.0
        stale = {k: v for k, v in st.stale.items() if k != image}
        way_back = RolloutState(
            old=current,
            new=image,
            status=RolloutStatus.PROGRESS,
            started=came[0],
            share=share,
            milestone=max([m for m in self.milestones if share >= m], default=0.0),
            diff={"added": 0, "removed": 0},
            peak=n_back,
            stale=stale,
            moved=now,
            rollback=True,
        )
        self._save(family, way_back)
        event = RolloutEvent(
            family,
            image,
            current,
            RolloutStatus.ROLLED_BACK,
            share,
            to_datetime(now),
            f"rollout of image {current} in family {family} rolled back after it completed: {len(came)} hosts "
            f"came back to image {image} within {self.return_s:g} s ({n_back} hosts now, {n_cur} still on image "
            f"{current}); they are not stale, and the way back is followed like a rollout",
        )
        return way_back, [event]

    def diff(self, old: str, new: str) -> dict[str, list[str]]:
        """Features most new-cohort hosts show and the old cohort (almost) never did, and the reverse."""
        b = self.baseline
        n_new, n_old = b.n(new), b.n(old)

        def common(image: str, n: int) -> list[str]:
            return [f for f, e in b.counts.get(image, {}).items() if n and e[0] / n >= self.majority]

        def absent(image: str, n: int, f: str) -> bool:
            return not n or b.count(image, f) / n <= self.rare_fraction

        added = sorted(f for f in common(new, n_new) if absent(old, n_old, f))[: self.max_diff]
        removed = sorted(f for f in common(old, n_old) if absent(new, n_new, f))[: self.max_diff]
        return {"added": added, "removed": removed}

    @staticmethod
    def _explain_diff(family: str, old: str, new: str, n_new: int, diff: dict[str, list[str]]) -> str:
        def few(fs: list[str]) -> str:
            shown = "; ".join(describe(f) for f in fs[:6])
            return shown + (f"; and {len(fs) - 6} more" if len(fs) > 6 else "")

        parts = [f"image {new} reached {n_new} hosts in family {family}, replacing image {old}."]
        if diff["added"]:
            parts.append(f"It brings {len(diff['added'])} change(s): {few(diff['added'])}.")
        if diff["removed"]:
            parts.append(f"It drops {len(diff['removed'])}: {few(diff['removed'])}.")
        if not diff["added"] and not diff["removed"]:
            parts.append("Its hosts look like the old image's.")
        parts.append("These come with the image and are not reported per host.")
        return " ".join(parts)
