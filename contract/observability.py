"""Observable component events, vector-style: each is declared once, and `emit` both counts it (a
Prometheus counter) and logs it, so logs and metrics can never disagree.

Each package lists its own signals in its `signals.py`; this module holds only the mechanism.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, start_http_server

log = logging.getLogger("herdwatch")


@dataclass
class Signal:
    """One observable event, e.g. `events_dead_lettered`, counted as herdwatch_<name>_total."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    level: int = logging.DEBUG
    registry: CollectorRegistry = field(default=REGISTRY, repr=False)

    def __post_init__(self) -> None:
        self._counter = Counter(f"herdwatch_{self.name}", self.help, list(self.labels), registry=self.registry)

    def emit(self, count: int = 1, /, **labels: Any) -> None:
        if count <= 0:
            return
        (self._counter.labels(**labels) if self.labels else self._counter).inc(count)
        if log.isEnabledFor(self.level):
            detail = " ".join(f"{k}={v}" for k, v in labels.items())
            log.log(self.level, "%s count=%d %s", self.name, count, detail)

    def value(self, **labels: Any) -> float:
        """Current count (for tests and status output)."""
        counter = self._counter.labels(**labels) if self.labels else self._counter
        return float(counter._value.get())


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Expose every registered counter and gauge at http://addr:port/metrics (port 0 disables)."""
    if port:
        start_http_server(port, addr=addr)
        log.info("prometheus metrics on http://%s:%d/metrics", addr, port)


# --- logging -------------------------------------------------------------------------------------------
RATE_LIMITED = ("herdwatch.kafka", "aiokafka", "faust", "mode", "kafka")
"""Loggers whose repeated lines (connection trouble, mostly) are rate limited by `RepeatFilter`."""
REMIND_S = 60.0
"""A repeated line is let through again at most this often, with how many were held back."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_VARYING = re.compile(r"\d+")


def _escape(text: str) -> str:
    """Control characters (terminal escapes included) as visible \\xNN, so a log file holds only text."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class RepeatFilter(logging.Filter):
    """Lets the first line of a kind through, then holds back repeats for `interval` seconds; the first repeat
    after that goes through with "(N similar lines held back in the last S s)". A kind is the logger, the level
    and the message with its numbers blanked, so "connect to 127.0.0.1:9092 failed (after 3ms)" lines are one
    kind. Only loggers in `prefixes` are limited: herdwatch's own lines are never held back."""

    def __init__(self, prefixes: tuple[str, ...] = RATE_LIMITED, interval: float = REMIND_S,
                 clock: Callable[[], float] = time.monotonic, max_kinds: int = 1000) -> None:
        super().__init__()
        self.prefixes, self.interval, self.clock, self.max_kinds = prefixes, interval, clock, max_kinds
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def _limited(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self.prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._limited(record.name):
            return True
        try:
            text = record.getMessage()
        except Exception:  # a broken format string: let logging report it
            return True
        key = (record.name, record.levelno, _VARYING.sub("#", text)[:200])
        now = self.clock()
        with self._lock:
            last, held = self._seen.get(key, (None, 0))
            if last is not None and now - last < self.interval:
                self._seen[key] = (last, held + 1)
                return False
            if len(self._seen) >= self.max_kinds:
                self._seen.clear()
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{text} ({held} similar line(s) held back in the last {now - (last or now):.0f} s)"
            record.args = None
        return True


class PlainFormatter(logging.Formatter):
    """The text format, with control characters escaped (no terminal codes in a log file)."""

    def format(self, record: logging.LogRecord) -> str:
        return _escape(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
                               "level": record.levelname.lower(), "logger": record.name,
                               "message": record.getMessage(), "pid": record.process}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=True)  # ensure_ascii: control characters become \uNNNN


def log_format() -> str:
    """HERDWATCH_LOG_FORMAT: text (default) or json."""
    value = os.environ.get("HERDWATCH_LOG_FORMAT", "text").strip().lower() or "text"
    if value not in ("text", "json"):
        raise ValueError(f"HERDWATCH_LOG_FORMAT={value!r}: use text or json")
    return value


def setup_logging(verbose: bool = False, fmt: str | None = None) -> None:
    """The root handler every herdwatch process logs through: plain text or JSON (HERDWATCH_LOG_FORMAT), never
    colours, control characters escaped, repeated connection trouble rate limited (RepeatFilter)."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "herdwatch", False)]
    if len(ours) != len(root.handlers):  # someone else configured logging (a test runner): leave it, as basicConfig
        return
    for h in ours:
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if (fmt or log_format()) == "json" else PlainFormatter(TEXT_FORMAT))
    handler.addFilter(RepeatFilter())
    handler.herdwatch = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


# librdkafka syslog levels -> logging levels
_RDKAFKA_LEVELS = {0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.CRITICAL, 3: logging.ERROR,
                   4: logging.WARNING, 5: logging.INFO, 6: logging.INFO, 7: logging.DEBUG}
kafka_log = logging.getLogger("herdwatch.kafka")


class KafkaHealth:
    """A confluent-kafka `error_cb`: logs "unreachable" once when the client loses every broker, counts the
    errors that follow (the RepeatFilter lets a reminder with counts through) and logs once when a later error
    is not a connection error. Cheap enough to make one per client."""

    def __init__(self, bootstrap: str, remind_s: float = REMIND_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.bootstrap = bootstrap
        self.remind_s, self.clock = remind_s, clock
        self.down = False
        self.since = 0.0
        self.last_said = 0.0
        self.held = 0

    def __call__(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        now = self.clock()
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE):
            if not self.down:
                self.down, self.since, self.last_said, self.held = True, now, now, 0
                kafka_log.warning("Kafka unreachable at %s (%s); retrying. Check HERDWATCH_KAFKA_BOOTSTRAP or "
                                  "start one with `herdwatch kafka start`", self.bootstrap, err.str())
            elif now - self.last_said >= self.remind_s:
                kafka_log.warning("Kafka still unreachable at %s for %.0f s (%d more errors; last: %s)",
                                  self.bootstrap, now - self.since, self.held + 1, err.str())
                self.last_said, self.held = now, 0
            else:
                self.held += 1
            return
        if self.down:  # another kind of error means the broker answered again
            self.down = False
            kafka_log.info("Kafka at %s answers again after %.0f s", self.bootstrap, now - self.since)
        kafka_log.error("Kafka client error at %s: %s", self.bootstrap, err.str())


def kafka_client_logging(bootstrap: str) -> dict[str, Any]:
    """confluent-kafka settings that route librdkafka's log lines and errors through Python logging."""
    return {"logger": _RdkafkaLogger(), "error_cb": KafkaHealth(bootstrap), "log.connection.close": False}


class _RdkafkaLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """What confluent-kafka calls as `logger.log(level, fmt, *args)` with syslog levels; forwarded to
    `herdwatch.kafka` with logging levels."""

    def __init__(self) -> None:
        super().__init__(kafka_log, {})

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if args and args[0] == "FAIL":  # a failed connection: the error_cb (KafkaHealth) reports it already
            level = 7
        kafka_log.log(_RDKAFKA_LEVELS.get(level, level if level > 7 else logging.INFO), msg, *args)
