"""The herdwatch host agent: probes (collectors/probes) -> on-disk spool -> Kafka.

Entry point: `herdwatch collect` (herdwatch/commands/collect.py) -> collectors.agent.Agent.
"""
