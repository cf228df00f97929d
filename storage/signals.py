"""Observable events of the storage sink, declared once (counted and logged by Signal.emit)."""

from __future__ import annotations

import logging

from contract.observability import Signal

rows_inserted = Signal("sink_rows_inserted", "rows written to ClickHouse", labels=("table",))
batches_inserted = Signal("sink_batches_inserted", "insert batches written to ClickHouse")
dead_lettered = Signal("sink_dead_lettered", "messages or events sent to the dead-letter topic",
                       labels=("topic", "cause"), level=logging.WARNING)
duplicates_skipped = Signal("sink_duplicates_skipped", "events already stored, not inserted again",
                            labels=("why",))
insert_failed = Signal("sink_insert_failed", "failed inserts (the batch is kept and retried)",
                       level=logging.WARNING)
paused = Signal("sink_paused", "consumption paused because the store is unavailable (backpressure)",
                level=logging.WARNING)
resumed = Signal("sink_resumed", "consumption resumed after the store came back", level=logging.INFO)
commit_failed = Signal("sink_commit_failed", "offset commits that failed (rows are deduplicated on restart)",
                       level=logging.WARNING)
query_refused = Signal("query_refused", "SQL refused before it ran (not one safe read statement)",
                       labels=("why",), level=logging.WARNING)
endpoint_busy = Signal("endpoint_busy", "query endpoint connections refused because every worker was busy",
                       level=logging.WARNING)
endpoint_timeout = Signal("endpoint_timeout", "query endpoint connections cut off for sending or reading too slowly",
                          level=logging.WARNING)
endpoint_bad_request = Signal("endpoint_bad_request", "query endpoint requests refused as malformed",
                              labels=("why",), level=logging.WARNING)
message_failed = Signal("sink_message_failed", "messages that raised while being turned into rows (dead-lettered)",
                        labels=("topic",), level=logging.ERROR)
