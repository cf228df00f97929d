"""Everything a stream worker counts (and logs), declared once. Exposed as herdwatch_streams_*_total."""

from __future__ import annotations

import logging

from contract.observability import Signal

messages_in = Signal("streams_messages_in", "telemetry messages (batches) consumed")
events_in = Signal("streams_events_in", "telemetry events decoded and accepted")
events_dead_lettered = Signal("streams_events_dead_lettered",
                              "malformed telemetry sent to the dead-letter topic", labels=("reason",),
                              level=logging.WARNING)
events_duplicate = Signal("streams_events_duplicate",
                          "events skipped because their host already applied that seq (replays)")
events_lost = Signal("streams_events_lost", "events missing according to per-host sequence gaps")
observations = Signal("streams_observations", "host feature observations sent to the cohort stage")
observation_messages = Signal("streams_observation_messages",
                              "messages the host stage sent to the observations topic (under a backlog each "
                              "holds several telemetry messages' observations)")
observations_scored = Signal("streams_observations_scored", "observations the cohort stage learned and scored")
findings = Signal("streams_findings", "findings published to the anomaly topic", labels=("kind", "severity"))
rollout_events = Signal("streams_rollout_events", "rollout events published", labels=("status",),
                        level=logging.INFO)
lifecycle_events = Signal("streams_lifecycle_events", "host lifecycle events published",
                          labels=("status", "reason"), level=logging.INFO)
messages_refetched = Signal("streams_messages_refetched",
                            "source messages Faust lost after fetching them; fetched again (see faust_fixes)",
                            labels=("reason",), level=logging.WARNING)
messages_unrecoverable = Signal("streams_messages_unrecoverable",
                                "source offsets that never arrived even after re-fetching (processing went on)",
                                level=logging.ERROR)
messages_skipped = Signal("streams_messages_skipped",
                          "source messages skipped: second deliveries, and ones that come again after a re-fetch")
hosts_forgotten = Signal("streams_hosts_forgotten", "per-host state deleted after the retention period")
engine_errors = Signal("streams_engine_errors", "messages or observations a stage failed on (logged, dead-lettered)",
                       labels=("stage",), level=logging.ERROR)
