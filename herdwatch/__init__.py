"""herdwatch: security telemetry for cloud clone fleets. This package holds the shared event contract,
settings, topics, observability and the `herdwatch` CLI."""

__version__ = "0.1.0"
