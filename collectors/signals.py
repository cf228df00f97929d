"""The collector's observable events and gauges, declared once (counted in Prometheus and logged)."""

from __future__ import annotations

import logging

from prometheus_client import Gauge, Histogram

from contract.observability import Signal

events_sent = Signal("collector_events_sent", "events acknowledged by Kafka")
events_spooled = Signal("collector_events_spooled", "events written to the on-disk spool")
events_dropped = Signal("collector_events_dropped", "events lost (spool bound, disk full, rejected)",
                        labels=("reason",), level=logging.WARNING)
probe_errors = Signal("collector_probe_errors", "probe collections that raised", labels=("probe",),
                      level=logging.WARNING)
probe_stuck = Signal("collector_probe_stuck", "probe runs that overran their time budget (once per stuck run)",
                     labels=("probe",), level=logging.WARNING)
probe_skipped = Signal("collector_probe_skipped", "probe runs not started because the previous run has not returned",
                       labels=("probe",))
probe_shed = Signal("collector_probe_shed", "probe collections skipped to stay within budget",
                    labels=("probe",), level=logging.INFO)
broker_errors = Signal("collector_broker_errors", "Kafka client errors (broker unreachable, ...)",
                       labels=("code",), level=logging.INFO)
delivery_retries = Signal("collector_delivery_retries", "spool records re-sent after a delivery failure",
                          level=logging.WARNING)
spool_write_errors = Signal("collector_spool_write_errors", "spool appends that failed (disk full, ...)",
                            level=logging.WARNING)
spool_corrupt = Signal("collector_spool_corrupt", "spool records skipped because they failed the checksum",
                       level=logging.WARNING)
clock_jumps = Signal("collector_clock_jumps", "wall clock jumps seen (wall vs monotonic)",
                     level=logging.WARNING)
input_truncated = Signal("collector_input_truncated", "oversized inputs truncated (cmdlines, lines)",
                         labels=("what",))
degrade_changes = Signal("collector_degrade_changes", "self-limit level changes", labels=("direction",),
                         level=logging.WARNING)

kafka_unreachable = Signal("collector_kafka_unreachable",
                           "'Kafka unreachable since T, N events spooled' lines (once, then at a bounded rate)",
                           level=logging.INFO)
kafka_unreachable_since = Gauge("herdwatch_collector_kafka_unreachable_since_seconds",
                                "epoch seconds since Kafka is unreachable; 0 while it is reachable")
kafka_client_cpu_pct = Gauge("herdwatch_collector_kafka_client_cpu_pct",
                             "CPU of the Kafka client's own threads over the budget window, % of one core "
                             "(not counted in the self-limit)")
spool_pending_events = Gauge("herdwatch_collector_spool_pending_events", "events in the spool, not yet acked")
spool_bytes = Gauge("herdwatch_collector_spool_bytes", "bytes on disk in the spool")
own_cpu_pct = Gauge("herdwatch_collector_cpu_pct", "agent CPU use over the budget window, % of one core")
own_rss_bytes = Gauge("herdwatch_collector_rss_bytes", "agent resident memory")
degrade_level = Gauge("herdwatch_collector_degrade_level", "0 = full rate; each level halves probe rates")
probe_duration = Histogram("herdwatch_collector_probe_duration_seconds", "time spent in one probe collection",
                           ["probe"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))

netlink_errors = Signal("collector_netlink_errors", "sock_diag netlink dumps that failed (truncated, garbled, "
                        "foreign, refused, timeout, oversized); that run read /proc/net instead",
                        labels=("reason",), level=logging.WARNING)
exec_events_shed = Signal("collector_exec_events_shed", "exec/exit events not reported to stay within bounds "
                          "(rate: over exec_max_reads_per_s; pending: reader queue full; kernel_overflow: the "
                          "kernel dropped events; kinds: too many kinds at once)", labels=("reason",))
process_source = Gauge("herdwatch_collector_process_source", "1 for the process event source in use: connector "
                       "(kernel exec events), fanotify (exec events in a PID namespace) or poll (/proc polling)",
                       ["mode"])
PROCESS_SOURCES = ("connector", "fanotify", "poll")


def set_process_source(mode: str) -> None:
    for m in PROCESS_SOURCES:
        process_source.labels(m).set(1 if m == mode else 0)
