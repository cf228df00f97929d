"""The host agent: runs the probes on their intervals, stamps events with the per-host sequence
number, and hands each cycle's events, as one batch, to the spool-backed delivery.

Lifecycle: agent.hello first (with host age and anything lost or shed before), agent.heartbeat every
heartbeat interval (counters, own CPU/RSS, shed probe runs, dropped events), agent.goodbye on a clean
stop (SIGTERM, SIGINT, --duration). Scheduling uses the monotonic clock, so wall-clock jumps change
event times but never the probe rhythm; a jump is reported in the next heartbeat.

Each probe runs with a time budget in its own worker thread (collectors/runner.py): a stuck probe is
reported once and skipped while the others go on, and SIGTERM ends the agent within shutdown_flush_s
whatever a probe is doing. The state dir is created 0700 (files in it 0600), never through a symlink.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import psutil

from collectors import allocator, signals
from collectors.budget import Budget
from collectors.delivery import Delivery
from collectors.hostkey import load_or_create
from collectors.identity import Identity, resolve_identity
from collectors.probes import (
    ConfigProbe,
    LoginProbe,
    MetricsProbe,
    ModuleProbe,
    NetworkProbe,
    PackageProbe,
    Probe,
    ProcessProbe,
)
from collectors.probes.exec_events import ExecSource, ExecSourceUnavailable
from collectors.probes.fanotify_events import FanotifySource
from collectors.redact import Redactor
from collectors.runner import ProbeRunner
from collectors.safe import ensure_private_dir
from collectors.settings import AgentKafkaSettings, CollectorSettings
from collectors.spool import Spool
from collectors.state import SeqCounter, read_json, write_json
from contract import __version__
from contract.events import Event, Kind

if TYPE_CHECKING:  # `herdwatch collect` passes AgentKafkaSettings: the agent never imports pydantic
    from contract.settings import KafkaSettings

log = logging.getLogger("herdwatch.collector")

CLOCK_JUMP_S = 5.0
SEQ_SAVE_S = 10.0


def build_probes(s: CollectorSettings, own_traffic: Callable[[], dict[str, float]] | None = None) -> list[Probe]:
    if s.proc != Path("/proc"):  # e.g. a sidecar reading the host's /proc mounted at /host/proc
        psutil.PROCFS_PATH = str(s.proc)
    redactor = Redactor(s.redact_patterns)  # the one redaction of command lines, shared by the probes
    source, reason = open_exec_source(s) if "processes" not in s.disabled_probes else (None, "probe disabled")
    processes = ProcessProbe(s.process_interval_s, s.process_inventory_s, s.proc, s.max_cmdline_chars, redactor,
                             exec_source=source, source_reason=reason, exec_window_s=s.exec_window_s,
                             max_events_per_cycle=s.exec_max_events_per_cycle)
    if source is not None:
        log.info("process events: %s (every exec)",
                 f"kernel connector, {source.reader} reader" if source.mode == "connector"
                 else "fanotify FAN_OPEN_EXEC, the connector being refused here")
    else:
        log.info("process events: /proc polling every %.1f s (%s)", s.process_interval_s, reason)
    network = NetworkProbe(s.network_interval_s, s.network_inventory_s, s.proc, s.max_sockets,
                           source=s.network_source if "network" not in s.disabled_probes else "proc")
    if "network" not in s.disabled_probes:
        info = network.source_info()
        log.info("sockets: %s", "sock_diag netlink" if info["mode"] == "netlink" else f"/proc/net ({info['reason']})")
    logins = LoginProbe(s.login_interval_s, s.login_inventory_s, s.auth_logs,
                        s.state_dir / "journal.cursor" if s.journal else None, s.max_auth_bytes_per_read,
                        state_dir=s.state_dir)
    metrics = MetricsProbe(s.metrics_interval_s, procs=lambda: len(processes.known),
                           conns=lambda: network.count, failed_logins=lambda: logins.failed_total,
                           cgroups=s.watch_cgroups, own_scope=s.cgroup_own_scope, own_traffic=own_traffic)
    probes: list[Probe] = [processes, network, logins, metrics,
                           ConfigProbe(s.config_interval_s, s.config_inventory_s, s.root, s.proc, redactor),
                           PackageProbe(s.package_interval_s, s.package_inventory_s, s.root),
                           ModuleProbe(s.module_interval_s, s.module_inventory_s, s.proc)]
    return [p for p in probes if p.name not in s.disabled_probes]


def open_exec_source(s: CollectorSettings) -> tuple[ExecSource | FanotifySource | None, str]:
    """The kernel's process events where the settings allow and they work, else fanotify exec events
    (a PID namespace refuses the connector), else (None, why not)."""
    if s.process_source == "poll":
        return None, "configured: process_source=poll"
    if s.proc != Path("/proc"):
        return None, f"reading {s.proc}: the connector reports this host's own pids only"
    if os.geteuid() != 0:
        return None, "not root: the process events connector needs root"
    source = ExecSource(s.proc, s.exec_max_reads_per_s)
    try:
        source.open()
    except ExecSourceUnavailable as e:
        if s.process_source == "connector":
            log.warning("process_source=connector but %s; polling /proc instead", e)
            return None, str(e)
        fallback = FanotifySource(s.proc, s.exec_max_reads_per_s)
        try:
            fallback.open()
        except ExecSourceUnavailable as f:
            return None, f"{e}; {f}"
        return fallback, ""
    return source, ""


class Agent:
    def __init__(self, settings: CollectorSettings, kafka: KafkaSettings | AgentKafkaSettings,
                 probes: list[Probe] | None = None,
                 identity: Identity | None = None, budget: Budget | None = None,
                 wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        allocator.limit_arenas(settings.malloc_arena_max)  # before the Kafka client and the probes start threads
        self.settings = settings
        self.kafka = kafka
        self.wall, self.mono = wall, mono
        state = settings.state_dir
        try:
            ensure_private_dir(state)
        except OSError as e:
            raise RuntimeError(f"cannot use state dir {state}: {e}; set HERDWATCH_COLLECTOR_STATE_DIR or "
                               f"--state-dir to a writable directory (not a symlink)") from e
        self.started_mono = mono()
        self.identity = identity or resolve_identity(settings)
        self.host_key = load_or_create(settings.host_key_path)  # signs every batch; made once, never replaced
        log.info("host key %s (%s)", self.host_key.fingerprint, settings.host_key_path)
        self.spool = Spool(state / "spool", settings.spool_max_bytes, settings.spool_segment_bytes,
                           settings.spool_fsync, settings.spool_fsync_interval_s)
        self.seq = SeqCounter(state / "seq.json")
        self.seq.resume_after(self.spool.last_seq)
        self.delivery = Delivery(kafka, self.spool, self.identity.host.host_id.encode(),
                                 settings.max_inflight, settings.replay_rate_msgs, settings.replay_rate_bytes,
                                 settings.max_message_bytes, settings.spool_memory_bytes, signer=self.host_key)
        self.probes = probes if probes is not None else build_probes(settings, self.delivery.traffic.totals)
        self.budget = budget or Budget(settings.cpu_budget_pct, settings.rss_budget_mb,
                                       settings.budget_window_s, settings.max_degrade_level)
        self.runner = ProbeRunner(settings.probe_timeout_s, settings.probe_timeouts, mono)
        self.stop_event = threading.Event()
        self.stop_reason = "stopped"
        self.shed: dict[str, int] = {}
        self._next_due: dict[str, float] = {}
        self._next_inventory: dict[str, float] = {}
        self._next_heartbeat = self.started_mono + settings.heartbeat_interval_s
        self._clock_jumps: list[float] = []
        self._last_tick: tuple[float, float] | None = None
        self._report_file = state / "report.json"
        previous = read_json(self._report_file) or {}
        self._carried_dropped = int(previous.get("unreported_dropped", 0))
        self._carried_shed: dict[str, int] = dict(previous.get("unreported_shed", {}))
        self._reported_dropped = 0
        self.topics_ready = threading.Event()
        self._first_ack_logged = False
        self._seq_saved_at = -1e18

    # -- events ---------------------------------------------------------------------------------
    def publish(self, emits: list[tuple[Kind, dict[str, Any]]]) -> list[Event]:
        """Stamp one cycle's events with consecutive seq numbers and spool them as one batch."""
        if not emits:
            return []
        first = self.seq.take(len(emits))
        now = datetime.fromtimestamp(self.wall(), UTC)
        events = [Event.new(self.identity.host, kind, first + i, payload, time=now)
                  for i, (kind, payload) in enumerate(emits)]
        self.delivery.submit(events)
        if self.mono() - self._seq_saved_at >= SEQ_SAVE_S:  # the spool tail also holds the latest seq
            self.seq.save()
            self._seq_saved_at = self.mono()
        return events

    def seq_written(self) -> int:
        """The highest seq written to the spool so far (-1: none yet): heartbeats and goodbye announce it, so
        the stream can count events written but never received when a host ends without goodbye."""
        last = self.spool.last_seq
        return -1 if last is None else last

    def dropped_total(self) -> int:
        return self._carried_dropped + self.spool.dropped + sum(self.delivery.dropped.values())

    def _loss_report(self) -> dict[str, Any]:
        total = self.dropped_total()
        new = total - self._reported_dropped
        self._reported_dropped = total
        shed = dict(self._carried_shed)
        for name, n in self.shed.items():
            shed[name] = shed.get(name, 0) + n
        return {"spool_dropped": new, "events_dropped": total, "dropped_by_reason": self._drop_reasons(),
                "shed": shed}

    def _drop_reasons(self) -> dict[str, int]:
        reasons = dict(self.delivery.dropped)
        if self.spool.dropped:
            reasons["spool_full"] = reasons.get("spool_full", 0) + self.spool.dropped
        if self._carried_dropped:
            reasons["previous_run"] = self._carried_dropped
        return reasons

    def _save_report(self) -> None:
        unreported = self.dropped_total() - self._reported_dropped
        with contextlib.suppress(OSError):
            write_json(self._report_file, {"unreported_dropped": max(unreported, 0), "unreported_shed": {}})

    def hello(self) -> tuple[Kind, dict[str, Any]]:
        ident = self.identity
        now = self.wall()
        payload = {"agent_version": __version__, "boot_time": ident.boot_time, "hostname": ident.hostname,
                   "host_age_s": round(max(0.0, now - ident.first_seen), 3),
                   "uptime_s": round(max(0.0, now - ident.boot_time), 3),
                   "os": platform.system().lower(), "kernel": platform.release(), "arch": platform.machine(),
                   "pid": os.getpid(), "identity_sources": ident.sources,
                   "spool_pending": self.delivery.pending,
                   "probes": {p.name: p.interval for p in self.probes}}
        self._add_sources(payload)
        payload.update(self._loss_report())
        self._carried_shed = {}
        return Kind.HELLO, payload

    def _add_sources(self, payload: dict[str, Any]) -> None:
        if (source := self.process_source()) is not None:
            payload["process_source"] = source
        for probe in self.probes:
            if isinstance(probe, NetworkProbe):
                payload["network_source"] = probe.source_info()

    def process_source(self) -> dict[str, str] | None:
        """Where process events come from (ProcessProbe.source_info)."""
        for probe in self.probes:
            if isinstance(probe, ProcessProbe):
                return probe.source_info()
        return None

    def heartbeat(self) -> tuple[Kind, dict[str, Any]]:
        payload: dict[str, Any] = {"events_sent": self.delivery.sent, "events_spooled": self.delivery.pending,
                                   "cpu_pct": round(self.budget.cpu_pct, 3),
                                   "rss_bytes": int(self.budget.rss_bytes),
                                   "degrade_level": self.budget.level, "spool_bytes": self.spool.total_bytes,
                                   "broker_up": bool(self.delivery.broker_up), "seq_written": self.seq_written()}
        self._add_sources(payload)
        payload.update(self._loss_report())
        if stuck := self.runner.stuck():
            payload["stuck_probes"] = stuck
        if self._clock_jumps:
            payload["clock_jumps_s"] = list(self._clock_jumps)
            self._clock_jumps = []
        return Kind.HEARTBEAT, payload

    # -- the loop ---------------------------------------------------------------------------------
    def run_probes(self, force_full: bool = False) -> list[tuple[Kind, dict[str, Any]]]:
        now = self.mono()
        out: list[tuple[Kind, dict[str, Any]]] = []
        factor = self.budget.factor
        for probe in self.probes:
            if self.stop_event.is_set():
                break
            due = self._next_due.get(probe.name, 0.0)
            if not force_full and now < due:
                continue
            full = force_full or probe.name not in self._next_inventory or (
                probe.inventory_interval is not None and now >= self._next_inventory[probe.name])
            if full and probe.inventory_interval is not None:
                self._next_inventory[probe.name] = now + probe.inventory_interval
            t0 = time.perf_counter()
            try:
                out.extend(self.runner.run(probe, full, self.stop_event))
            except Exception:
                signals.probe_errors.emit(probe=probe.name)
                log.exception("probe %s failed; it will run again next interval", probe.name)
            signals.probe_duration.labels(probe.name).observe(time.perf_counter() - t0)
            if isinstance(probe, ProcessProbe):  # exec events shed to stay within bounds
                for name, n in probe.take_shed().items():
                    self.shed[name] = self.shed.get(name, 0) + n
            # fixed cadence (not drifting by the cycle's own run time): a process living one interval
            # is always seen
            step = probe.interval * factor
            self._next_due[probe.name] = due + step if now - due < step else now + step
            if factor > 1:
                self.shed[probe.name] = self.shed.get(probe.name, 0) + factor - 1
                signals.probe_shed.emit(factor - 1, probe=probe.name)
        return out

    def _check_clock(self) -> None:
        wall, mono = self.wall(), self.mono()
        if self._last_tick is not None:
            jump = (wall - self._last_tick[0]) - (mono - self._last_tick[1])
            if abs(jump) >= CLOCK_JUMP_S:
                self._clock_jumps.append(round(jump, 3))
                signals.clock_jumps.emit()
                log.warning("wall clock jumped by %.1f s; probe timing is unaffected", jump)
                self._next_heartbeat = mono  # report it now
        self._last_tick = (wall, mono)

    def cycle(self, first: bool = False) -> list[Event]:
        """One pass: due probes (all of them, with inventories, when `first`), heartbeat if due."""
        self._check_clock()
        emits = [self.hello()] if first else []
        emits += self.run_probes(force_full=first)
        self.budget.check()
        if self.mono() >= self._next_heartbeat:
            emits.append(self.heartbeat())
            self._next_heartbeat = self.mono() + self.settings.heartbeat_interval_s
            allocator.trim()  # ~30 us: what the last minute freed goes back to the kernel
        events = self.publish(emits)
        self._pump()
        return events

    def _pump(self) -> None:
        try:
            self.delivery.pump()
        except Exception:  # delivery trouble must never stop collection: the spool keeps everything
            signals.broker_errors.emit(code="pump")
            log.exception("delivery step failed; events stay in the spool and are retried")
        self._log_first_ack()

    def _log_first_ack(self) -> None:
        if not self._first_ack_logged and self.delivery.first_ack_at is not None:
            self._first_ack_logged = True
            since_exec = time.time() - psutil.Process().create_time()
            since_start = self.delivery.first_ack_at - self.started_mono
            log.info("first event acknowledged by Kafka %.3f s after agent start "
                     "(%.2f s after process start)", since_start, since_exec)

    def _sleep_until_next(self) -> None:
        now = self.mono()
        due = min([*self._next_due.values(), self._next_heartbeat, now + 1.0])
        backlog = self.delivery.pending > 0 and self.delivery.broker_up is not False
        wait = max(0.0, due - now)
        if backlog or self.delivery.inflight:
            wait = min(wait, 0.05 if backlog else 0.2)
        deadline = now + wait
        while not self.stop_event.is_set():
            remaining = deadline - self.mono()
            if remaining <= 0:
                break
            self.stop_event.wait(min(remaining, 0.2 if self.delivery.inflight else remaining))
            self._pump()

    def _ensure_topics(self) -> None:
        from contract.kafka_admin import ensure_topics
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                # reads only bootstrap, topics and confluent_config(), which both settings classes have
                ensure_topics(cast("KafkaSettings", self.kafka), timeout=5.0)
                self.topics_ready.set()
                allocator.trim()  # the admin client's buffers
                return
            except Exception as e:
                log.debug("topics not ensured yet: %s", e)
            self.stop_event.wait(delay)
            delay = min(delay * 2, 30.0)

    def stop(self, reason: str = "stopped") -> None:
        self.stop_reason = reason
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, lambda *_: self.stop("sigterm"))
        signal.signal(signal.SIGINT, lambda *_: self.stop("interrupt"))

    def run(self, duration: float | None = None, once: bool = False) -> int:
        """Run until stopped (or for `duration` seconds, or one cycle); returns events still unsent."""
        threading.Thread(target=self._ensure_topics, name="ensure-topics", daemon=True).start()
        deadline = self.started_mono + duration if duration is not None else None
        self.cycle(first=True)
        allocator.trim()  # the first inventories allocate and free a few MB once
        while not once and not self.stop_event.is_set():
            if deadline is not None and self.mono() >= deadline:
                self.stop_reason = "duration"
                break
            self._sleep_until_next()
            if self.stop_event.is_set():
                break
            self.cycle()
        if not once:
            goodbye = {"reason": self.stop_reason, "uptime_s": round(self.mono() - self.started_mono, 3),
                       "seq_written": self.seq_written()}
            goodbye.update(self._loss_report())
            self.publish([(Kind.GOODBYE, goodbye)])
        self.stop_event.set()
        flush_s = max(self.settings.shutdown_flush_s, 10.0) if once else self.settings.shutdown_flush_s
        left = self.delivery.flush(flush_s)
        self._log_first_ack()
        self.seq.save(fsync=True)
        self._save_report()
        self.delivery.close()
        for probe in self.probes:
            if isinstance(probe, ProcessProbe | NetworkProbe):
                probe.close()
        if left:
            log.warning("%d events not yet acknowledged; they stay in %s and are sent on the next start",
                        left, self.spool.dir)
        return left
