"""The host stage's logic, free of Faust: one telemetry message (one host's batch) in, changes out.

Per host the stage keeps two table values:

    host_seq[host]   HostSeq.to_json(): boot_id, seq, first/last seen, last forwarded   (tiny, every message)
    host_state[host] HostState.to_dict()                                            (only when it changed)

"Changed" leaves out the state's newest event time (`t`): every message moves it, nothing judges by it, and
host_seq's `last_seen` keeps it; without that rule every message rewrote the whole state (about 5 KB of
processes, connections and inventories on simulator traffic), with it about one message in three does.

`seq` makes replays harmless: after a crash Faust re-reads messages past the last committed offset, and
events whose seq the host already applied are skipped (counted as duplicates), so host state never counts
an event twice; the last seq of a few earlier boots is kept too, so a replay that crosses a reboot is
skipped as well. An event the detectors fail on (a payload extra of a type they did not expect) is
rejected on its own (`HostResult.rejected`, for the dead-letter topic); the rest of the batch is applied.
Forward jumps are sequence gaps: a DATA_LOSS finding. A host that comes back after `host_timeout_s` of
silence (its cohort has marked it gone) rejoins with its whole known state. A quiet host that changes
nothing still sends a keep-alive observation every `touch_interval_s` so its cohort knows it is alive.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from contract.events import ORIGINAL_TIME_TAG, Event, Kind, format_time, is_retimed
from contract.findings import Finding, FindingKind, Severity
from detectors import HostState, SequenceGap
from detectors.types import Observation


@dataclass(frozen=True, slots=True)
class HostSeq:
    """Where a host's event stream stands: the host_seq table's value (JSON via to_json / from_json)."""

    boot_id: str
    seq: int
    """The last seq applied in this boot."""
    first_seen: float
    """Event time (epoch seconds) of the host's first event."""
    last_seen: float
    """Event time of its newest event."""
    last_forwarded: float | None
    """Event time of the last observation sent to the cohort stage (None: none yet)."""
    skew_reported: float | None = None
    """Event time of the last clock_skew finding about this host (None: none)."""
    earlier_boots: tuple[tuple[str, int], ...] = ()
    """(boot_id, last seq applied) of up to EARLIER_BOOTS_KEPT earlier boots, oldest first."""

    written: int = -1
    """The highest seq the host announced written to its spool in this boot (the signed herdwatch-written
    header of each message, heartbeat/goodbye `seq_written`; -1 none)."""

    def to_json(self) -> dict[str, Any]:
        return {"written": self.written, "boot_id": self.boot_id, "seq": self.seq, "first_seen": self.first_seen,
                "last_seen": self.last_seen, "last_forwarded": self.last_forwarded,
                "skew_reported": self.skew_reported, "earlier_boots": [list(b) for b in self.earlier_boots]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HostSeq:
        fwd, skew = d["last_forwarded"], d.get("skew_reported")
        return cls(written=int(d.get("written", -1)), boot_id=str(d["boot_id"]), seq=int(d["seq"]),
                   first_seen=float(d["first_seen"]),
                   last_seen=float(d["last_seen"]), last_forwarded=None if fwd is None else float(fwd),
                   skew_reported=None if skew is None else float(skew),
                   earlier_boots=tuple((str(b), int(s)) for b, s in d.get("earlier_boots") or ()))


EARLIER_BOOTS_KEPT = 8
"""How many earlier boots' last seqs a host's HostSeq remembers (replays crossing reboots are skipped)."""


@dataclass
class HostResult:
    seq: HostSeq | None
    """New host_seq value (None only if there was nothing to apply; compare with the old one to write)."""
    state: dict[str, Any] | None
    """New host_state value, or None if unchanged (`t` alone, the newest event time, is no change)."""
    observations: list[Observation] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    duplicates: int = 0
    lost: int = 0
    rejected: list[tuple[Event, str]] = field(default_factory=list)
    """Events the detectors failed on, with the reason (their seq counts as applied: never retried)."""


def process_host_batch(events: list[Event], seq: HostSeq | None, state: dict[str, Any] | None,
                       host_timeout_s: float, touch_interval_s: float, sent_written: int | None = None) -> HostResult:
    """Apply one host's events (in order) to its stored state; see the module docstring. `sent_written` is
    the highest seq the host had spooled when it sent this message (its signed herdwatch-written header)."""
    first_ev = events[0]
    host = first_ev.host_id
    hs = _host_state(state, first_ev, [])
    boot: str | None
    first_seen: float | None
    last_seen: float | None
    if seq is not None:
        boot, last_seq, first_seen, last_seen, last_fwd = (seq.boot_id, seq.seq, seq.first_seen, seq.last_seen,
                                                           seq.last_forwarded)
        gaps = SequenceGap.from_dict({"last": {host: [boot, last_seq]}})
    else:
        boot, last_seq, first_seen, last_seen, last_fwd = None, -1, None, None, None
        gaps = SequenceGap()
    skew_reported = seq.skew_reported if seq is not None else None
    earlier = dict(seq.earlier_boots) if seq is not None else {}
    applied: list[Event] = []
    result = HostResult(seq=seq, state=None)
    for event in events:
        if event.host_id != host:
            continue  # the caller groups by host; never mix hosts' state
        if (boot == event.boot_id and event.seq <= last_seq) or \
                (boot != event.boot_id and event.seq <= earlier.get(event.boot_id, -1)):
            result.duplicates += 1
            continue
        gap = gaps.check(event)
        if gap is not None:
            result.findings.append(gap)
            result.lost += int(gap.details.get("missing", 0))
        t = event.time.timestamp()
        if is_retimed(event) and (skew_reported is None or t - skew_reported >= CLOCK_SKEW_REPEAT_S):
            result.findings.append(clock_skew_finding(event))
            skew_reported = t
        if last_seen is not None and hs.started and t - last_seen > host_timeout_s:
            # The cohort marked this host gone meanwhile: rejoin with everything it still shows.
            result.observations.append(Observation(
                host, hs.image_id, hs.image_family, event.time, added=tuple(sorted(hs.features())),
                first=True))
        try:
            obs = hs.apply(event)
        except Exception as e:  # a payload extra of a type the detectors did not expect: this event only
            result.rejected.append((event, f"detectors failed on this event: {type(e).__name__}: {str(e)[:200]}"))
            hs = _host_state(state, first_ev, applied)  # apply may have stopped half way: rebuild
            obs = None
        else:
            applied.append(event)
        if obs is not None:
            result.observations.append(obs)
        if boot is not None and boot != event.boot_id:
            earlier[boot] = last_seq
            earlier.pop(event.boot_id, None)
            while len(earlier) > EARLIER_BOOTS_KEPT:
                del earlier[next(iter(earlier))]
        boot, last_seq = event.boot_id, event.seq
        first_seen = t if first_seen is None else first_seen
        last_seen = t if last_seen is None else max(last_seen, t)
    if boot is None or first_seen is None or last_seen is None:  # every event was a duplicate
        return result
    result.observations = merge(result.observations)
    if result.observations:
        last_fwd = last_seen
    elif hs.started and (last_fwd is None or last_seen - last_fwd >= touch_interval_s):
        result.observations.append(Observation(host, hs.image_id, hs.image_family,
                                               datetime.fromtimestamp(last_seen, UTC)))
        last_fwd = last_seen
    # What the host said it had written counts within one boot; a new boot (seq may restart) starts afresh.
    written = seq.written if seq is not None and seq.boot_id == boot else -1
    written = max(announced_written(events, host, written), -1 if sent_written is None else sent_written)
    result.seq = HostSeq(boot, last_seq, first_seen, last_seen, last_fwd, skew_reported, tuple(earlier.items()),
                         written=written)
    announce_tail(result, result.seq, seq, hs)
    new_state = hs.to_dict()
    if state_changed(state, new_state):
        result.state = new_state
    return result


def state_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether the host state needs writing: anything but its newest event time (`t`) differs."""
    if old is None or old.keys() != new.keys():
        return True
    return any(k != "t" and old[k] != v for k, v in new.items())


def announced_written(events: list[Event], host: str, written: int) -> int:
    """The highest `seq_written` a heartbeat or goodbye of `host` announced (`written` if none did)."""
    for event in events:
        if event.host_id == host and event.kind in (Kind.HEARTBEAT, Kind.GOODBYE):
            value = event.payload.get("seq_written")
            if type(value) is int:
                written = max(written, value)
    return written


def owed(seq: HostSeq | None) -> int:
    """Events the host announced written but the stage has not received (yet)."""
    return 0 if seq is None else max(0, seq.written - seq.seq)


def announce_tail(result: HostResult, new: HostSeq, old: HostSeq | None, hs: HostState) -> None:
    """Tell the cohort stage what the host announced written and what arrived: every observation carries
    both, and when the tail still owed changes an observation is sent even if nothing else changed (the
    cohort stage judges at a timeout: data_loss for what never arrived)."""
    if not result.observations and owed(new) != owed(old) and hs.started:
        result.observations.append(Observation(hs.host_id, hs.image_id, hs.image_family,
                                               datetime.fromtimestamp(new.last_seen, UTC)))
    result.observations = [replace(o, seq_written=new.written, seq_received=new.seq) for o in result.observations]


def _host_state(state: dict[str, Any] | None, first: Event, applied: list[Event]) -> HostState:
    """The host's state from the stored value with `applied` applied again (apply is deterministic)."""
    hs = HostState.from_dict(state) if state else HostState(first.host_id, first.image_id, first.image_family)
    for event in applied:
        hs.apply(event)
    return hs


CLOCK_SKEW_REPEAT_S = 3600.0
"""A host whose clock stays off is reported again at most this often (event time)."""


def clock_skew_finding(event: Event) -> Finding:
    original = event.tags[ORIGINAL_TIME_TAG]
    return Finding(
        kind=FindingKind.CLOCK_SKEW, host_id=event.host_id, image_id=event.image_id,
        image_family=event.image_family, time=event.time, score=0.5, severity=Severity.MEDIUM, subject="clock",
        explanation=(f"host {event.host_id} sends events dated {original} that arrived at "
                     f"{format_time(event.time)}: its clock is off (or its events were replayed). They are "
                     f"kept, re-timed to their arrival; the tag {ORIGINAL_TIME_TAG} keeps their own time."),
        details={"original_time": original, "arrival": format_time(event.time)})


def merge(observations: list[Observation]) -> list[Observation]:
    """Fold one host's consecutive observations from one batch into as few as possible.

    A feature added and removed again within the batch cancels out; metrics keep their latest values.
    A host's first observation, a departure and a change of image start a new one.
    """
    out: list[Observation] = []
    for o in observations:
        prev = out[-1] if out else None
        if prev is None or prev.gone or o.gone or o.first or o.image_id != prev.image_id:
            out.append(o)
            continue
        added = dict.fromkeys(prev.added)
        removed = dict.fromkeys(prev.removed)
        for f in o.removed:
            if f in added:
                del added[f]
            else:
                removed[f] = None
        for f in o.added:
            if f in removed:
                del removed[f]
            else:
                added[f] = None
        details = {f: d for f, d in {**o.details, **prev.details}.items() if f in added}  # the first instance
        out[-1] = Observation(o.host_id, o.image_id, o.image_family, o.time, added=tuple(added),
                              removed=tuple(removed), metrics={**prev.metrics, **o.metrics}, first=prev.first,
                              details=details)
    return out
