"""The ground floor of herdwatch: what every component agrees on and nothing else.

- `events`: the event contract (envelope, kinds, payload fields, batch encoding and validation)
- `findings`: what the detectors emit (findings, rollout events, host lifecycle events)
- `topics`: every Kafka topic, declared once; `kafka_admin`: creating them, reading lag
- `settings`: the shared HERDWATCH_* settings (Kafka, storage)
- `observability`: `Signal`, a counted and logged observable event
- `ids`: time-ordered event ids

This package imports no other herdwatch package; every other package may import it.
"""

__version__ = "0.1.0"
