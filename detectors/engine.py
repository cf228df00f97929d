"""FamilyEngine: learns and scores host observations against their cohort, with rollout awareness.

    engine = FamilyEngine(store=None, config=EngineConfig(min_hosts=5))
    out = engine.process(obs)     # learn + score one Observation -> [Finding | RolloutEvent]
    out += engine.tick(now)       # periodic, event time: timeouts, rollouts, stale images, model refits

One engine can serve one image family or many (every store key names its image, host or family).
Several engines may share one store: give each `family=` so it rebuilds its caches from its own keys.
All durable state is in `store` as small JSON-able values: store_keys.py names every key family
(baseline.py's cohort state, plus pending judgements, suppression times, metric streaks and rollout
state), records.py the typed records they hold. Caches on the instance are rebuilt from the store.

Timing (all event time): a behaviour feature that is rare in its cohort is judged `confirm_s` after it
appears, a configuration/package/module value `grace_s` after; while more hosts keep gaining the same
feature the judgement waits until it has not spread for `settle_s`. A feature that reached many hosts by
then is a fleet-wide change (a push, a deploy): it moved the baseline and is not reported.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, MutableMapping
from dataclasses import replace
from typing import Any

from contract.findings import Finding, FindingKind, RolloutEvent, Severity
from detectors.base import hhmmss, to_datetime
from detectors.baseline import CohortBaseline
from detectors.calibration import TailCalibrator, report_probability
from detectors.drift import ConfigDrift
from detectors.engine_config import EngineConfig
from detectors.episodes import Episodes
from detectors.features import (
    DETAIL_ONLY,
    IMMEDIATE_KINDS,
    STATE_KINDS,
    describe,
    describe_instance,
    kind_of,
    split_state,
)
from detectors.hardening import PENDING_SUBJECT as HARDENING_PENDING
from detectors.hardening import HardeningJudge, Library, OsvData
from detectors.multivariate import MultivariateOutlier
from detectors.peers import PeerDeviation
from detectors.policy import PolicyCheck, Rule
from detectors.rarity import CohortRarity, ImageHistory
from detectors.records import MetricReport, PendingJudgement
from detectors.rollout import RolloutTracker
from detectors.self_history import SelfHistory
from detectors.store_keys import (
    COHORT_SIZE,
    HOST_METRICS,
    IMAGE,
    IMAGE_SUBJECT_PREFIX,
    METRIC_HISTORY,
    PENDING,
    SUPPRESSED,
)
from detectors.suppression import Suppressor
from detectors.types import Observation

Output = Finding | RolloutEvent

CHECKPOINT_REPORTS = 20
"""Reports of a host between two writes of its own history (and at least self_history_checkpoint_s of event
time): every write copies its whole learned state (~100 numbers per metric), which at a 5-minute cadence and
600 s was every other report, about a tenth of the CPU of a week's backtest; a 10 s or 30 s host is written
every 600 s as before."""
ABSENT_KINDS = frozenset({"proc", "listen"})
"""Behaviour that is reported when one host stops showing what (nearly) all its clones show."""

_SEVERITY_SCORE = {
    Severity.INFO: 0.1,
    Severity.LOW: 0.3,
    Severity.MEDIUM: 0.5,
    Severity.HIGH: 0.75,
    Severity.CRITICAL: 0.95,
}


class FamilyEngine:
    """Composes the detectors over one shared CohortBaseline. `config` (EngineConfig) is the whole config."""

    def __init__(
        self,
        store: MutableMapping[str, Any] | None = None,
        config: EngineConfig | None = None,
        *,
        family: str | None = None,
        osv: OsvData = None,
        checks: Library | None = None,
        rules: Iterable[Rule] | None = None,
    ) -> None:
        """`store`: where durable state lives (a dict by default); `config`: every knob (EngineConfig);
        `family`: load only this family's keys from a store shared with other engines; `osv`: OSV data in
        memory for vulnerable packages (an OsvIndex or a callable returning the current one; the worker and
        the CLI read it from `config.osv_path`: streams/osv_data.py); `checks`, `rules`: the hardening checks
        and policy rules, parsed (None: none; the worker, the CLI, the backtest and the evaluation read the
        shipped ones or `config.hardening_checks` / `config.policies`: streams/checks_data.py)."""
        c = self.config = EngineConfig() if config is None else config
        for given, path, knob in ((checks, c.hardening_checks, "hardening_checks"), (rules, c.policies, "policies")):
            if given is None and path is not None:
                raise ValueError(
                    f"engine setting {knob}={path!r} needs its file read: the detectors read no files; pass "
                    f"FamilyEngine(..., **engine_inputs(config)) (streams/checks_data.py)"
                )
        self.store: MutableMapping[str, Any] = {} if store is None else store
        self.min_hosts = c.min_hosts
        self.majority = c.majority
        self.absent_majority = c.absent_majority
        self.confirm_s = c.confirm_s
        self.grace_s = c.grace_s
        self.settle_s = c.settle_s
        self.recheck_s = c.recheck_s
        self.host_timeout_s = c.host_timeout_s
        self.self_learn_s = c.self_learn_s
        self.campaign_after_s = c.campaign_after_s
        self.image_retention_s = c.image_retention_s
        self.peer_persistence = c.peer_persistence
        self.mv_enabled = c.mv_enabled
        self.mv_persistence = c.mv_persistence
        self.record_scores = c.record_scores
        b = self.baseline = CohortBaseline(self.store, family=family)
        self.rarity = CohortRarity(c.rare_fraction, c.min_hosts, baseline=b, campaign_share=c.campaign_share)
        self.history = ImageHistory(self.store, c.history_s, c.campaign_window_s, c.history_max)
        self._history_swept = 0.0
        self.drift = ConfigDrift(c.rare_fraction, c.majority, c.min_hosts, baseline=b)
        self.policy = PolicyCheck(rules or (), c.majority, baseline=b)
        self.peers = PeerDeviation(
            c.peer_min_z,
            c.peer_min_rel,
            None if c.peer_min_abs is None else dict(c.peer_min_abs),
            c.peer_persistence,
            c.peer_window_s,
            baseline=b,
            min_peers=c.peer_min_peers,
            window_intervals=c.peer_window_intervals,
        )
        self.own = SelfHistory(
            budget=c.alarm_budget,
            alpha=c.self_history_alpha,
            bucket_alpha=c.self_history_bucket_alpha,
            warmup=c.self_history_warmup,
            seasonal=c.self_history_seasonal,
            baseline=b,
        )
        """Each host against its own metric history (alone without clones, with the peers otherwise)."""
        self.peer_calibration = TailCalibrator()
        self.peer_episodes = Episodes(self.own.episodes.gap)
        """Per host, its open episode of reports the peer view flagged: reported once, and its flagged scores
        counted once by the peer calibration, by the same rules as the host's own history (Episodes)."""
        self._metric_scores: dict[str, tuple[float, float, float]] = {}
        self._own_saved: dict[str, list[float]] = {}
        """host -> [event time of its last own-history checkpoint, its reports since]."""
        self.mv = MultivariateOutlier(
            min_hosts=c.mv_min_hosts,
            refit_s=c.mv_refit_s,
            refit_reports=c.mv_refit_reports,
            window_s=c.peer_window_s,
            threshold=c.mv_threshold,
            min_z=c.mv_min_z,
            baseline=b,
        )
        self.rollout = RolloutTracker(
            c.min_hosts,
            c.majority,
            c.rare_fraction,
            c.complete_share,
            hold_s=c.rollout_hold_s,
            complete_after_s=c.rollout_complete_after_s,
            baseline=b,
            return_s=c.rollout_return_s,
        )
        self.suppress = Suppressor(self.store, c.suppress_s)
        self.hardening = HardeningJudge(self, Library(()) if checks is None else checks, osv, c.hardening_delay_s)
        self.now = 0.0
        self.watermark = float("inf")
        self._departed: dict[str, list[float]] = {}
        """image -> times of recent departures (for judgements made as of an earlier time)."""
        """Event time up to which judgements and periodic work may run (the stream workers' low watermark
        over their source partitions; learning is never held back). inf: the newest event time seen."""
        self.last_scores: dict[str, float] = {}
        """Per-detector scores of the last processed observation (when record_scores is on)."""
        self._mv_scores: dict[str, float] = {}
        self._mv_seen: dict[str, float] = {}
        self._heap: list[tuple[float, str, str]] = []
        self._reports: list[tuple[float, str, int, Observation]] = []
        """Metric reports waiting to be scored (a heap by event time): a report is scored once the
        watermark reaches it, so its peers' reports up to its cut-off have all arrived."""
        self._unscored: dict[str, list[tuple[float, dict[str, float]]]] = {}
        """host -> its waiting reports (time, metrics), oldest first (stored with its latest metrics)."""
        self._queued = 0
        self._loaded = False

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_heap"] = []
        d["_reports"] = []
        d["_unscored"] = {}
        d["_loaded"] = False
        return d

    def load(self) -> None:
        """Rebuild the caches from the store (done automatically by the first process/tick call)."""
        if self._loaded:
            return
        self._loaded = True
        self.baseline.load()
        self._heap = []
        self._reports = []
        self._unscored = {}
        for key, value in list(self.store.items()):
            if HOST_METRICS.holds(key) and value.get("unscored") and self.baseline.owns(key):
                image, host = HOST_METRICS.parse(key)
                rec = self.baseline.hosts.get(host)
                if rec is not None and rec.image == image:
                    for rt, values in MetricReport.from_json(value).unscored:
                        self._queue(Observation(host, image, rec.family, to_datetime(rt), metrics=values), rt)
                continue
            if METRIC_HISTORY.holds(key) and self.baseline.owns(key):
                (host,) = METRIC_HISTORY.parse(key)
                self.own.restore(host, value)
                self.peer_calibration.load(host, list(value.get("peer_calibration", [])))
                self.peer_episodes.load(host, list(value.get("peer_episode", [])))
                continue
            history = self.history.holds(key)
            if not (PENDING.holds(key) or SUPPRESSED.holds(key) or history) or not self.baseline.owns(key):
                continue
            if history:
                self.history.load(key, value)
            elif PENDING.holds(key):
                image, feature = PENDING.parse(key)
                self._heap.append((PendingJudgement.from_json(value).due(self.settle_s), image, feature))
            else:
                self.suppress.load(key)
        heapq.heapify(self._heap)

    # ---- the public API --------------------------------------------------------------------------
    def process(self, obs: Observation) -> list[Output]:
        """Learn one observation and return what it (and the event time it brings) gives rise to."""
        self.load()
        b = self.baseline
        t = obs.time.timestamp()
        if t > self.now:
            self.now = t
        until = min(self.now, self.watermark)
        out: list[Output] = self._judge_due(until) if self._heap and self._heap[0][0] <= until else []
        host = obs.host_id
        if obs.gone:
            if self._reports:
                out += self._score_reports(until)
            self._seen_last(host, t)
            leaving = b.hosts.get(host)
            if leaving is not None:
                self._note_left(leaving.image, host, tuple(b.host_features(host)), t)
            rec = b.leave(host)
            self._forget(host)
            if rec is not None:  # a judgement made late, as of an earlier time, still counts it (_n_at)
                self._departed.setdefault(rec.image, []).append(t)
            if rec is not None:
                out += self.rollout.update(rec.family, t)
            return out
        seen = obs.details  # the exact instances go to the pending judgements
        prev = b.hosts.get(host)
        if obs.removed and prev is not None:
            self._note_left(prev.image, host, obs.removed, t)
        if obs.metrics:
            self._queue(obs, t)
        joined = b.learn(obs, t, store_metrics=False)
        image, family = obs.image_id, obs.image_family
        if joined:
            if prev is not None:  # re-imaged: its old cohort lost a host
                out += self.rollout.update(prev.family, t)
            started = self.rollout.on_join(image, family, t)
            for event in started:  # the new image starts with the behaviour history of the one it replaces
                self.history.replaces(event.new_image, event.old_image)
            out += started
            out += self.rollout.update(family, t)
            stale = self.rollout.stale(image, family)
            if stale:
                out += self._stale_finding(host, image, family, stale, t)
        for f in obs.added:
            self._consider(image, host, f, t, seen.get(f))
        self.hardening.observe(obs, t)  # hardening checks and vulnerable packages: image first, then drift
        for f in obs.removed:
            kind = kind_of(f)
            if kind in IMMEDIATE_KINDS:
                self.history.seen(image, f, t)
            if kind in STATE_KINDS and not f.startswith(DETAIL_ONLY):
                self._consider_absent(image, host, f, t, self.majority)
            elif kind in ABSENT_KINDS:
                self._consider_absent(image, host, f, t, self.absent_majority)
        if obs.metrics and self.mv_enabled:
            self.mv.note(image, host, obs.metrics, t)
        if self._reports:
            out += self._score_reports(until)
        if obs.metrics and b.hosts[host].image == image:
            # the host's latest metrics, with its reports still waiting to be scored (crash safety)
            waiting = tuple(self._unscored.get(host, ()))
            self.store[HOST_METRICS.key(image, host)] = MetricReport(t, obs.metrics, waiting).to_json()
        if self.record_scores:
            self.last_scores = self.scores(obs)
        return out

    def tick(self, now: Any) -> list[Output]:
        """Periodic work at event time `now` (datetime or epoch seconds)."""
        self.load()
        t = now.timestamp() if hasattr(now, "timestamp") else float(now)
        if t > self.now:
            self.now = t
        t = min(self.now, self.watermark)
        b = self.baseline
        out = self._judge_due(t)
        if self._reports:
            out += self._score_reports(t)
        for host in b.silent_hosts(t, self.host_timeout_s):  # silent too long: treated as gone
            interval = self.peers.cadence.interval(host)
            if interval is not None and t - b.hosts[host].last <= 3 * interval:
                continue  # a host reporting every few minutes is silent only after three of its intervals
            self._seen_last(host, t)
            b.leave(host)
            self._forget(host)
        for family in list(b.images):
            out += self.rollout.update(family, t)
            for old, new in self.rollout.stale_images(family).items():
                for host in sorted(b.members.get(old, ())):
                    out += self._stale_finding(host, old, family, new, t)
        if self.mv_enabled:
            for image in list(b.metrics):
                out += self._multivariate(image, t)
        self._evict_images(t)
        if t - self._history_swept >= 3600.0:
            self._history_swept = t
            for image, times in list(self._departed.items()):  # bounded: departures of the last hour
                self._departed[image] = [x for x in times if x > t - 3600.0]
            for image in list(self.history.entries):
                self.history.sweep(image, t, lambda f, image=image: b.count(image, f) > 0)  # type: ignore[misc]
        return out

    def scores(self, obs: Observation) -> dict[str, float]:
        """Every detector's score for an (already learned) observation; used by `--scores` in backtests."""
        return {
            "rarity": round(self.rarity.score_one(obs), 4),
            "drift": round(self.drift.score_one(obs), 4),
            "policy": round(self.policy.score_one(obs), 4),
            "peers": round(self._metric_scores.get(obs.host_id, (0.0, 0.0, 0.0))[1], 4),
            "multivariate": round(self._mv_scores.get(obs.host_id, 0.0), 4),
            "rollout": round(self.rollout.score_one(obs), 4),
            "history": round(self._metric_scores.get(obs.host_id, (0.0, 0.0, 0.0))[0], 4),
            "metric": round(self._metric_scores.get(obs.host_id, (0.0, 0.0, 0.0))[2], 4),
        }

    # ---- pending judgements -------------------------------------------------------------------------
    def _cap(self, n: int, policy: bool, behaviour: bool = False) -> int:
        if policy:
            return 256
        n = max(n, 1)
        return (self.rarity.campaign_max(n) if behaviour else self.rarity.rare_max(n)) + 1

    def _consider(self, image: str, host: str, f: str, t: float, details: dict[str, Any] | None = None) -> None:
        """Start or grow the pending judgement of a feature the host gained; `details`: the exact instance
        that brought it (a connection's address, port and process), named in the finding."""
        kind = kind_of(f)
        if f.startswith(DETAIL_ONLY):
            return  # named in the finding about the feature it is part of
        if kind in IMMEDIATE_KINDS:
            delay = self.confirm_s
        elif kind in STATE_KINDS:
            delay = self.grace_s
        else:
            return
        b = self.baseline
        n = b.n(image)
        c = b.count(image, f)
        key = PENDING.key(image, f)
        stored = self.store.get(key)
        policy = kind in ("cfg", "pkg") and bool(self.policy.violations(f))
        behaviour = kind in IMMEDIATE_KINDS
        # reported within the campaign window: more hosts gaining it join its campaign, however many (a deploy
        # does not start with a finding), so it is not dismissed as common
        sticky = behaviour and self.rarity.sticky(f)  # see ImageHistory
        spreading = behaviour and bool(self.history.campaign_hosts(image, f, t, sticky))
        if stored is None:
            if behaviour and self.history.known(image, f, host, t, c > 1, sticky):
                self.history.seen(image, f, t)
                return  # the image has shown it before: known behaviour, however few hosts show it now
            if not policy and not spreading and n >= self.min_hosts and c > self._cap(n, False, behaviour) - 1:
                if behaviour:
                    self.history.judged(image, f, t)
                return  # common in an established cohort
            e = PendingJudgement(first=t, grown=t, delay=delay, hosts={host: t}, policy=policy,
                                 seen={host: details} if details else {})
            self.store[key] = e.to_json()
            heapq.heappush(self._heap, (e.due(self.settle_s), image, f))
            return
        e = PendingJudgement.from_json(stored)
        if host in e.hosts:
            if details and host not in e.seen:  # the exact instance arrived after the feature
                self.store[key] = replace(e, seen={**e.seen, host: details}).to_json()
            return
        if not e.policy and not spreading and n >= self.min_hosts and c > self._cap(n, False, behaviour):
            self.store.pop(key, None)  # it spread across the cohort: a fleet-wide change, not an anomaly
            if behaviour:
                self.history.judged(image, f, t)
            return
        hosts, seen = dict(e.hosts), e.seen
        if len(hosts) < self._cap(n, e.policy or spreading, behaviour):
            hosts[host] = t
            if details:
                seen = {**seen, host: details}
        self.store[key] = replace(e, grown=t, hosts=hosts, seen=seen).to_json()

    def _note_left(self, image: str, host: str, features: tuple[str, ...], t: float) -> None:
        """`host` leaves the cohort, or loses `features`, at `t`: where one of them waits for a judgement that
        counts the host, note it, so that a judgement made late (a worker catching up on a backlog judges
        at its low watermark, after later observations were learnt) still counts the host as of when the
        judgement was due. Without this, a host destroyed minutes after showing a rare behaviour, while the
        worker was behind, was never reported."""
        rec = self.baseline.hosts.get(host)
        if rec is None:
            return
        for f in features:
            key = PENDING.key(image, f)
            stored = self.store.get(key)
            if stored is None or host not in stored.get("hosts", ()):
                continue
            e = PendingJudgement.from_json(stored)
            if host not in e.left:
                self.store[key] = replace(e, left={**e.left, host: (t, rec.family, rec.first)}).to_json()

    def _consider_absent(self, image: str, host: str, f: str, t: float, majority: float) -> None:
        b = self.baseline
        n = b.n(image)
        if n < self.min_hosts or (b.count(image, f) + 1) / n < majority:  # +1: this host just lost it
            return
        self._add_absent(image, host, f, t)

    def _add_absent(self, image: str, host: str, f: str, t: float) -> None:
        key = PENDING.key(image, f"-{f}")
        stored = self.store.get(key)
        if stored is None:
            e = PendingJudgement(first=t, grown=t, delay=self.grace_s, hosts={host: t})
            heapq.heappush(self._heap, (e.due(self.settle_s), image, f"-{f}"))
        else:
            old = PendingJudgement.from_json(stored)
            e = replace(old, grown=t, hosts={**old.hosts, host: t})
            if len(e.hosts) > self._cap(self.baseline.n(image), False):
                self.store.pop(key, None)
                return
        self.store[key] = e.to_json()

    def _judge_due(self, now: float) -> list[Output]:
        out: list[Output] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, image, f = heapq.heappop(heap)
            key = PENDING.key(image, f)
            stored = self.store.get(key)
            if stored is None:
                continue
            e = PendingJudgement.from_json(stored)
            due = e.due(self.settle_s)
            if due > now:
                heapq.heappush(heap, (due, image, f))
                continue
            # a judgement made late (a stream worker catching up on a backlog) is made as of when it was due
            result = self._judge(image, f, e, due if now - due > self.recheck_s else now)
            if result is None:  # held: look again later
                e = replace(e, recheck_at=now + self.recheck_s)
                self.store[key] = e.to_json()
                heapq.heappush(heap, (e.due(self.settle_s), image, f))
                continue
            self.store.pop(key, None)
            out += result
        return out

    def _judge(self, image: str, f: str, e: PendingJudgement, now: float) -> list[Output] | None:
        if f == HARDENING_PENDING:
            return self.hardening.judge(image, e.hosts, now)
        b = self.baseline
        absent = f.startswith("-")
        feat = f[1:] if absent else f
        hosts = []
        gone_with: list[str] = []
        """Hosts that had the feature when the judgement was due and have left or lost it since."""
        for h in e.hosts:
            rec = b.hosts.get(h)
            # when it left the cohort or lost the feature, if it did before this judgement was made
            left_at = e.left[h][0] if not absent and h in e.left else None
            had = left_at is not None and left_at >= now  # in order, judged before it left
            if rec is None or rec.image != image:
                if had:
                    hosts.append(h)
                    gone_with.append(h)
                continue
            has = feat in b.host_features(h)
            if has and left_at is not None and rec.first <= left_at < now:
                # it lost the feature during the wait (a sample: a polled short-lived process or connection
                # leaves at once) and shows it again: a periodic thing caught twice on this clone, not a
                # presence the judgement can count on
                has = False
            if (absent and not has and not self._has_other_value(h, feat)) or (not absent and has):
                hosts.append(h)
            elif had:
                hosts.append(h)
                gone_with.append(h)
        behaviour = not absent and kind_of(feat) in IMMEDIATE_KINDS
        if not hosts:
            if behaviour:
                self.history.judged(image, feat, now)
            return []
        family = self._host_family_first(hosts[0], e)[0]
        if self.rollout.held(image, family, now):
            return None
        n = self._n_at(image, now)
        if n >= self.min_hosts:
            scope, count, total = "cohort", b.count(image, feat), n
        elif b.family_n(family) >= self.min_hosts and b.family_n(family) > n:
            scope, count, total = "family", b.family_count(family, feat), b.family_n(family)
        else:
            scope, count, total = "self", b.count(image, feat), n
        count += len(gone_with)
        if absent and scope != "cohort":
            return []  # a missing feature is only judged against an established cohort
        out: list[Output] = []
        kind = kind_of(feat)
        if e.policy and not absent:
            out += self._policy_findings(image, family, feat, hosts, count, total, now)
        young = behaviour and self._young(image, family, e.first)  # the episode began in a young image
        if behaviour and scope == "cohort" and not young:
            earlier = self.history.campaign_hosts(image, feat, now, self.rarity.sticky(feat))
            campaign = list(dict.fromkeys([*earlier, *hosts]))
            if len(campaign) > 1 and (count <= self.rarity.campaign_max(total) or earlier):
                # new to the image, on several hosts at once, not a change of the whole image (or the spread
                # of what was reported within the campaign window): one report
                self.history.judged(image, feat, now, campaign)
                new = [h for h in hosts if h not in earlier] or hosts
                return out + self._campaign_finding(new, campaign, image, family, feat, count, total, e, now)
        lacking = total - count
        rare = (lacking if absent else count) <= self.rarity.rare_max(total)
        if scope == "self":
            # No peers to compare with: only what arrived after the host had settled counts as new.
            hosts = [h for h in hosts if e.hosts[h] - self._host_family_first(h, e)[1] >= self.self_learn_s]
            rare = True
        if behaviour:
            # a young image's reports are not followed: its clones showing it later is the image's behaviour
            # (a periodic job's child first read whole on one host), except a program run from /tmp or a
            # hidden directory
            followed = rare and (not young or self.rarity.sticky(feat))
            self.history.judged(image, feat, now, hosts if followed else ())
        if not rare:
            return out
        for h in hosts:
            if kind in STATE_KINDS:
                out += self._drift_finding(h, image, family, feat, absent, scope, count, total, e.hosts[h], now)
            elif absent:
                out += self._missing_finding(h, image, family, feat, count, total, e.hosts[h], now)
            else:
                out += self._rare_finding(h, image, family, feat, scope, count, total, now, e.seen.get(h))
        return out

    def _young(self, image: str, family: str, now: float) -> bool:
        """True while the behaviour history of `image` (its own and that of the images it replaced) spans
        less than campaign_after_s: "never seen in the image" means little yet, so no campaigns. Found in the
        lab: a job's `hostname` (it lives a millisecond; most of its execs were read without a command line)
        was first read whole on one, then two hosts of a two-minute-old image and reported as a campaign,
        then again each time it reached another clone."""
        firsts = self.baseline.images.get(family, {})
        born = min((firsts[i] for i in (image, *self.history.lineage.get(image, ())) if i in firsts), default=now)
        return now - born < self.campaign_after_s

    def _host_family_first(self, host: str, e: PendingJudgement) -> tuple[str, float]:
        """(family, when it joined) of a judged host: live, or as noted when it left (`_note_left`)."""
        rec = self.baseline.hosts.get(host)
        if rec is not None:
            return rec.family, rec.first
        _, family, first = e.left[host]
        return family, first

    def _n_at(self, image: str, when: float) -> int:
        """Live hosts of the cohort as of `when`: hosts that left then or later (a judgement made late, as of
        when it was due) still count, as `_judge` counts a host that had the feature then."""
        n = self.baseline.n(image)
        times = self._departed.get(image)
        if times:
            times[:] = [x for x in times if x >= when]  # judgement times only grow
            n += len(times)
        return n

    def _has_other_value(self, host: str, feat: str) -> bool:
        kind, key, _ = split_state(feat)
        if kind not in ("cfg", "pkg"):
            return False
        prefix = f"{kind}:{key}="
        return any(x.startswith(prefix) for x in self.baseline.host_features(host))

    # ---- findings ----------------------------------------------------------------------------------
    def _emit(
        self,
        kind: FindingKind,
        host: str,
        image: str,
        family: str,
        t: float,
        score: float,
        severity: Severity,
        subject: str,
        explanation: str,
        details: dict[str, Any],
        suppress_as: str | None = None,
        suppress_for: float | None = None,
    ) -> list[Output]:
        if not self.suppress.allow(suppress_as or host, subject, t, suppress_for):
            return []
        return [
            Finding(
                kind=kind,
                host_id=host,
                image_id=image,
                image_family=family,
                time=to_datetime(t),
                score=round(min(1.0, max(0.0, score)), 4),
                severity=severity,
                subject=subject,
                explanation=explanation,
                details=details,
            )
        ]

    def _rare_finding(
        self, host: str, image: str, family: str, f: str, scope: str, count: int, total: int, now: float,
        seen: dict[str, Any] | None = None,
    ) -> list[Output]:
        sev = self.rarity.severity(f)
        first = self.baseline.first_seen(image, f)
        if scope == "self":
            text = (
                f"{describe(f)} appeared on host {host}, which has no clones to compare with (image {image} "
                f"has {total} host(s)): new since the host started. Check who started it and why."
            )
            sev = Severity.LOW if sev in (Severity.LOW, Severity.MEDIUM) else Severity.MEDIUM
        else:
            text = self.rarity.explain(f, host, image, count, total, scope, family, first)
        exact = describe_instance(f, seen or {})
        if exact:  # what the analyst acts on first: the exact connection or listener and its process
            text = f"Host {host}: {exact}. {text[0].upper()}{text[1:]}"
        score = max(0.0, 1.0 - count / max(total, 1)) * (0.5 + 0.5 * _SEVERITY_SCORE[sev])
        return self._emit(
            FindingKind.RARE_FEATURE,
            host,
            image,
            family,
            now,
            score,
            sev,
            f,
            text,
            {
                "feature": f,
                "hosts_with": count,
                "hosts": total,
                "scope": scope,
                "first_seen": hhmmss(first) if first else None,
                **({"instance": dict(seen)} if seen else {}),
            },
        )

    def _campaign_finding(
        self,
        new: list[str],
        campaign: list[str],
        image: str,
        family: str,
        f: str,
        count: int,
        total: int,
        e: PendingJudgement,
        now: float,
    ) -> list[Output]:
        sev = self.rarity.severity(f)
        first = min([e.hosts[h] for h in new if h in e.hosts] or [e.first])
        names = ", ".join(campaign)
        earlier = [h for h in campaign if h not in new]
        text = (
            f"{describe(f)} appeared on {len(campaign)} hosts of image {image} ({names}; first seen "
            f"{hhmmss(first)} UTC), which never showed it before: {count} of {total} hosts show it now. "
            + (f"It was already reported on {', '.join(earlier)}. " if earlier else "")
            + "No image change explains it and it did not reach most of the image: check these hosts "
            "together, one actor may be spreading through the fleet."
        )
        exact = {h: describe_instance(f, e.seen[h]) for h in new if e.seen.get(h)}
        exact = {h: x for h, x in exact.items() if x}
        if exact:
            text += " " + "; ".join(f"host {h}: {x}" for h, x in exact.items()) + "."
        score = max(0.0, 1.0 - count / max(total, 1)) * (0.5 + 0.5 * _SEVERITY_SCORE[sev])
        return self._emit(
            FindingKind.CAMPAIGN,
            new[0],
            image,
            family,
            now,
            score,
            sev,
            f,
            text,
            {
                "feature": f,
                "hosts": list(campaign),
                "new_hosts": list(new),
                "hosts_with": count,
                "cohort_hosts": total,
                "scope": "cohort",
                "first_seen": hhmmss(first),
                **({"instances": {h: dict(e.seen[h]) for h in new if e.seen.get(h)}}
                   if any(e.seen.get(h) for h in new) else {}),
            },
        )

    def _missing_finding(
        self, host: str, image: str, family: str, f: str, count: int, total: int, since: float, now: float
    ) -> list[Output]:
        text = (
            f"{describe(f)} is missing on host {host} (gone since {hhmmss(since)} UTC) while {count} of {total} "
            f"hosts of image {image} still show it. Check whether it crashed or was stopped on purpose."
        )
        score = count / max(total, 1) * 0.75
        return self._emit(
            FindingKind.RARE_FEATURE,
            host,
            image,
            family,
            now,
            score,
            Severity.MEDIUM,
            f"-{f}",
            text,
            {"feature": f, "absent": True, "hosts_with": count, "hosts": total, "scope": "cohort"},
        )

    def _drift_finding(
        self,
        host: str,
        image: str,
        family: str,
        f: str,
        absent: bool,
        scope: str,
        count: int,
        total: int,
        since: float,
        now: float,
    ) -> list[Output]:
        text, details = self.drift.explain(f, host, image, absent=absent)
        if scope != "cohort":
            text += (
                f" (image {image} has only {self.baseline.n(image)} host(s); compared with family {family}, "
                f"{total} hosts)"
                if scope == "family"
                else " (no clones to compare with: new since the host started)"
            )
        sev = self.drift.severity(f)
        share = (total - count) / max(total, 1) if absent else count / max(total, 1)
        score = (1.0 - share) * (0.5 + 0.5 * _SEVERITY_SCORE[sev])
        details.update({"feature": f, "absent": absent, "scope": scope, "since": hhmmss(since)})
        return self._emit(
            FindingKind.CONFIG_DRIFT,
            host,
            image,
            family,
            now,
            score,
            sev,
            ("-" if absent else "") + f,
            text,
            details,
        )

    def _policy_findings(
        self, image: str, family: str, f: str, hosts: list[str], count: int, total: int, now: float
    ) -> list[Output]:
        out: list[Output] = []
        image_level = total > 0 and count / total >= self.majority
        for rule in self.policy.violations(f):
            details = {
                "rule": rule.id,
                "feature": f,
                "hosts_with": count,
                "hosts": total,
                "scope": "image" if image_level else "host",
            }
            # a violation the image's majority shares is the image's: reported once, on one host's name
            targets = hosts[:1] if image_level else hosts
            for h in targets:
                out += self._emit(
                    FindingKind.POLICY_VIOLATION,
                    h,
                    image,
                    family,
                    now,
                    _SEVERITY_SCORE[rule.severity],
                    rule.severity,
                    f"policy:{rule.id}",
                    self.policy.explain(rule, f, h, image, count, total, image_level),
                    details,
                    suppress_as=IMAGE_SUBJECT_PREFIX + image if image_level else None,
                    suppress_for=float("inf") if image_level else None,  # an image is assessed once
                )
        return out

    def _stale_finding(self, host: str, image: str, family: str, new: str, t: float) -> list[Output]:
        return self._emit(
            FindingKind.STALE_IMAGE,
            host,
            image,
            family,
            t,
            0.5,
            Severity.MEDIUM,
            f"stale:{image}",
            f"host {host} still runs image {image}, but family {family} completed its rollout to "
            f"image {new}. Replace or re-image the host (it misses the new image's changes).",
            {"image": image, "current_image": new},
        )

    # ---- metric reports -------------------------------------------------------------------------------
    def _queue(self, obs: Observation, t: float) -> None:
        """Keep a metric report until the watermark reaches it (once: a replayed one already waiting is not
        kept twice)."""
        pending = self._unscored.setdefault(obs.host_id, [])
        if any(rt == t for rt, _ in pending):
            return
        pending.append((t, obs.metrics))
        if len(pending) > 1 and pending[-2][0] > t:
            pending.sort(key=lambda r: r[0])
        self._queued += 1
        heapq.heappush(self._reports, (t, obs.host_id, self._queued, obs))

    def _score_reports(self, until: float) -> list[Output]:
        """Score the waiting metric reports in event-time order while the next one's peers are all known:
        its cut-off (the peer reports it is compared with are made at or before it, detectors/peers.py) is
        at or before `until`. Live, that is at once (the cut-off is half an interval back); behind a
        partition that lags, it waits. A cohort's reports within one step of the peers' grid share one peer
        view."""
        out: list[Output] = []
        heap = self._reports
        hosts = self.baseline.hosts
        while heap and (heap[0][0] <= until or self.peers.cutoff(heap[0][1], heap[0][0])[0] <= until):
            t, host, _, obs = heapq.heappop(heap)
            pending = self._unscored.get(host)
            if not pending or pending[0][0] != t:
                continue  # the host left (forgotten) since
            del pending[0]
            if not pending:
                del self._unscored[host]
            rec = hosts.get(host)
            if rec is None or rec.image != obs.image_id:
                continue
            out += self._metrics(obs, t)
        return out

    def _metrics(self, obs: Observation, t: float) -> list[Output]:
        """Metric findings: the peer view (cohorts with min_hosts) and the host's own history (every host).

        Both are scored before the report is learned. Each detector's threshold is calibrated to
        `alarm_budget` false alarms per 1,000 host-hours (the peers' never below peer_min_z).
        """
        b = self.baseline
        image = obs.image_id
        host = obs.host_id
        out: list[Output] = []
        peer_z: dict[str, float] = {}
        peer_view = False
        peer_raw = 0.0
        peer_thr = self.peers.min_z
        interval = self.peers.cadence.interval(host)
        if b.n(image) >= self.min_hosts:
            if interval is not None:
                p = report_probability(self.config.alarm_budget, interval)
                calibrated = self.peer_calibration.threshold(host, p)
                if calibrated is not None:
                    peer_thr = max(peer_thr, calibrated)
            view = self.peers.cutoff(host, t)
            devs = {m: self.peers.deviation(image, m, v, t, host, view) for m, v in obs.metrics.items()}
            streaks = self.peers.update_streaks(
                host, {m: d[0] != 0.0 and abs(d[0]) >= peer_thr for m, d in devs.items()}
            )
            # an episode of peer-flagged reports is reported once, on its first confirmed report, as the host's
            # own history does: a host that stays apart from its clones is one alert, not one per metric an hour
            reported = self.peer_episodes.reported(host)
            for metric, value in obs.metrics.items():
                z, med, scale, peers = devs[metric]
                peer_view = peer_view or peers >= self.peers.min_peers
                peer_z[metric] = z
                peer_raw = max(peer_raw, abs(z))
                deviating = z != 0.0 and abs(z) >= peer_thr
                streak = streaks[metric]
                if deviating and streak >= self.peer_persistence and not reported:
                    sev = Severity.HIGH if abs(z) >= 3 * peer_thr else Severity.MEDIUM
                    text = (
                        f"{metric} = {value:g} on host {host} while the {peers} other hosts of image {image} have a "
                        f"median of {med:g} (robust z {z:.1f}, for {streak} consecutive reports). Its clones do "
                        f"not do this: check what the host is running."
                    )
                    out += self._emit(
                        FindingKind.METRIC_DEVIATION,
                        host,
                        image,
                        obs.image_family,
                        t,
                        self.peers.z_score(z, peer_thr),
                        sev,
                        f"metric:{metric}",
                        text,
                        {
                            "metric": metric,
                            "value": value,
                            "median": med,
                            "scale": scale,
                            "z": z,
                            "peers": peers,
                            "streak": streak,
                            "view": "peers",
                        },
                    )
            if peer_view:  # a flagged report counts capped, once per episode (see SelfHistory.observe)
                flagged = peer_raw >= peer_thr
                if self.peer_episodes.counts(host, flagged):
                    self.peer_calibration.submit(host, peer_raw, peer_thr)
                self.peer_episodes.note(host, flagged)
            if out:  # the episode's first confirmed report: its later flags belong to this alert
                self.peer_episodes.report(host)
        self.peers.observe(host, image, t, obs.metrics)
        own_score = 0.0
        if self.config.self_history_enabled:
            raw, thr, top = self.own.observe(host, obs.metrics, t, spikes=not peer_view)
            own_score = self.own.report_score(*self.own.last.get(host, (0.0, 0.0)), thr)
            # with peers, the host's own history alerts only for what also sets it apart from its clones
            agreed = top is not None and (not peer_view or peer_z.get(top.metric, 0.0) >= 2.0)
            if thr is not None and top is not None and raw >= thr and agreed and not self.own.episodes.reported(host):
                out += self._own_finding(obs, top, raw, thr, t, peer_view)  # once per episode of flagged reports
                self.own.episodes.report(host)
            if not agreed and peer_view:
                own_score = min(own_score, self.peers.z_score(peer_z.get(top.metric, 0.0) if top else 0.0))
            self._checkpoint(host, t)
        peer_score = self.peers.z_score(peer_raw, peer_thr) if peer_view else 0.0
        self._metric_scores[host] = (own_score, peer_score, max(own_score, peer_score))
        return out

    def _own_finding(
        self, obs: Observation, j: Any, raw: float, thr: float, t: float, peer_view: bool
    ) -> list[Output]:
        host = obs.host_id
        b = self.baseline
        scope = (
            "and apart from its clones"
            if peer_view
            else f"(image {obs.image_id} has {b.n(obs.image_id)} host(s), too few to compare with)"
        )
        text = (
            f"{self.own.describe(j, host)}; its recent reports' score {raw:.1f} is above its calibrated {thr:.1f}) "
            f"{scope}. "
            "Check what changed on the host."
        )
        return self._emit(
            FindingKind.METRIC_DEVIATION,
            host,
            obs.image_id,
            obs.image_family,
            t,
            self.own.to_score(raw, thr),
            Severity.HIGH if raw >= 3 * thr else Severity.MEDIUM,
            f"metric:{j.metric}",
            text,
            {
                "metric": j.metric,
                "value": j.value,
                "usual_level": j.level,
                "usual_spread": j.spread,
                "z": j.z,
                "threshold": thr,
                "view": "self",
                "usual_view": j.view,
                "shift": j.shift,
            },
        )

    def _checkpoint(self, host: str, t: float) -> None:
        """Write the host's own history to the store every self_history_checkpoint_s of event time and at
        least CHECKPOINT_REPORTS of its reports: a restart loses at most that much learning, and a host
        reporting every 5 minutes is not rewritten in full every other report."""
        last = self._own_saved.get(host)
        if last is None:
            self._own_saved[host] = [t, 0.0]
            return
        last[1] += 1.0
        if t - last[0] < self.config.self_history_checkpoint_s or last[1] < CHECKPOINT_REPORTS:
            return
        last[0], last[1] = t, 0.0
        data = self.own.dump(host)
        data["peer_calibration"] = self.peer_calibration.to_json(host)
        data["peer_episode"] = self.peer_episodes.to_json(host)
        self.store[METRIC_HISTORY.key(host)] = data

    def _multivariate(self, image: str, t: float) -> list[Output]:
        b = self.baseline
        if b.n(image) < self.mv.min_hosts or not self.mv.due(image, t):
            return []
        scored = self.mv.score_hosts(image, t)  # refits first: the model includes the hosts it judges
        out: list[Output] = []
        reports = b.metrics.get(image, {})
        for host, (s, z) in scored.items():
            self._mv_scores[host] = s
            reported = reports[host][0] if host in reports else 0.0
            if self._mv_seen.get(host) == reported:
                continue  # persistence counts distinct metric reports, not ticks
            self._mv_seen[host] = reported
            outlier = s >= self.mv.threshold and z >= self.mv.min_z
            streak = self.peers.update_streak(host, "__mv__", outlier)
            if outlier and streak >= self.mv_persistence:
                rec = b.hosts.get(host)
                if rec is None:
                    continue
                parts = ", ".join(f"{k} {x:g} (peers {m:g})" for k, x, m in self.mv.contributions(image, host, t))
                text = (
                    f"host {host}'s metrics as a whole are unlike the {len(scored)} hosts of image {image} "
                    f"(isolation score {s:.2f}, {z:.1f} robust z above its peers, {streak} checks in a row); "
                    f"most different: {parts}."
                )
                out += self._emit(
                    FindingKind.MULTIVARIATE_OUTLIER,
                    host,
                    image,
                    rec.family,
                    t,
                    s,
                    Severity.MEDIUM,
                    "multivariate",
                    text,
                    {"score": s, "z": z, "streak": streak},
                )
        return out

    # ---- housekeeping -------------------------------------------------------------------------------
    def _seen_last(self, host: str, t: float) -> None:
        """A leaving host showed its behaviour until `t`: the image's history remembers that."""
        rec = self.baseline.hosts.get(host)
        if rec is None:
            return
        for f in self.baseline.host_features(host):
            if kind_of(f) in IMMEDIATE_KINDS:
                self.history.seen(rec.image, f, t)

    def _forget(self, host: str) -> None:
        self._unscored.pop(host, None)  # its waiting reports are dropped when they come up (_score_reports)
        self.suppress.forget_host(host)
        self.peers.forget(host)
        self.own.forget(host)
        self.peer_calibration.forget(host)
        self.peer_episodes.forget(host)
        self._metric_scores.pop(host, None)
        self._own_saved.pop(host, None)
        self.store.pop(METRIC_HISTORY.key(host), None)
        self._mv_scores.pop(host, None)
        self._mv_seen.pop(host, None)
        self.mv.forget(host)

    def _evict_images(self, now: float) -> None:
        """Drop images with no live host for image_retention_s (their family registry entry)."""
        b = self.baseline
        for family, images in list(b.images.items()):
            st = self.rollout.state(family)
            keep = {st.old, st.new, *st.stale} if st else set()
            for image in list(images):
                if b.n(image) == 0 and image not in keep and now - images[image] > self.image_retention_s:
                    del images[image]
                    self.store.pop(IMAGE.key(family, image), None)
                    self.store.pop(COHORT_SIZE.key(image), None)
                    b.counts.pop(image, None)
                    b.metrics.pop(image, None)
                    b.members.pop(image, None)
                    self.history.forget_image(image)
                    self.suppress.forget_host(IMAGE_SUBJECT_PREFIX + image)
