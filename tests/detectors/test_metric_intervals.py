"""A host report's per-interval counts are put on its agent's configured interval: an agent over its CPU budget
(or starting on a loaded machine) that reports after twice its interval does not look like a host doing twice
the traffic (found in the lab: an autoscaled worker reported every 20 s instead of 10 s and got
metric_deviation on net_bytes_in, net_packets_in, disk_write_bytes and interval_s itself)."""

from __future__ import annotations

from typing import Any

from det_helpers import EventMaker, at
from hypothesis import given
from hypothesis import strategies as st

from contract.events import Kind
from detectors import EngineConfig, FamilyEngine, HostState
from detectors.host_state import PER_INTERVAL

TRAFFIC = {"net_bytes_in": 1400.0, "net_packets_in": 15.0, "disk_write_bytes": 1.1e7, "cpu_pct": 12.0,
           "mem_pct": 40.0}


def report(hs: HostState, ev: EventMaker, s: float, took: float, every: Any = 10.0, scale: float = 1.0) -> Any:
    values = {k: (v * scale if k in PER_INTERVAL else v) for k, v in TRAFFIC.items()}
    payload: dict[str, Any] = {"values": {**values, "interval_s": took}, "scope": "host"}
    if every is not None:
        payload["every_s"] = every
    return hs.apply(ev(Kind.METRICS, s, payload))


def test_counts_of_a_stretched_interval_are_put_on_the_configured_one_levels_stay() -> None:
    hs, ev = HostState("h1", "ami-1", "web"), EventMaker()
    o = report(hs, ev, 20.0, took=20.0, scale=2.0)  # twice the time, twice the counts
    assert o is not None
    assert o.metrics["net_bytes_in"] == 1400.0 and o.metrics["disk_write_bytes"] == 1.1e7
    assert o.metrics["cpu_pct"] == 12.0 and o.metrics["mem_pct"] == 40.0
    assert "interval_s" not in o.metrics
    o = report(hs, ev, 30.0, took=10.2, scale=1.0)  # jitter: as sent
    assert o is not None and o.metrics["net_bytes_in"] == 1400.0


def test_without_the_configured_interval_counts_stay_as_sent() -> None:
    hs, ev = HostState("h1", "ami-1", "web"), EventMaker()
    o = report(hs, ev, 20.0, took=20.0, every=None, scale=2.0)
    assert o is not None and o.metrics["net_bytes_in"] == 2800.0 and "interval_s" not in o.metrics


@given(every=st.one_of(st.none(), st.booleans(), st.text(max_size=5), st.floats(allow_nan=True),
                       st.integers(min_value=-10**20, max_value=10**20), st.lists(st.integers(), max_size=2)),
       took=st.floats(allow_nan=True, allow_infinity=True))
def test_any_configured_interval_from_the_wire_scales_by_at_most_10x_or_not_at_all(every: Any, took: float) -> None:
    hs, ev = HostState("h1", "ami-1", "web"), EventMaker()
    o = report(hs, ev, 20.0, took=took, every=every)
    assert o is not None
    assert 140.0 <= o.metrics["net_bytes_in"] <= 14000.0
    assert o.metrics["cpu_pct"] == 12.0 and "interval_s" not in o.metrics


def half_rate_findings(every: float | None) -> list[Any]:
    """6 clones reporting every 10 s; from the 20th report h5's agent reports every 20 s (counts of 20 s)."""
    engine = FamilyEngine(config=EngineConfig())
    states = {f"h{i}": (HostState(f"h{i}", "ami-1", "web"), EventMaker(f"h{i}")) for i in range(6)}
    out: list[Any] = []
    for step in range(90):
        t = 10.0 * step
        for name, (hs, ev) in states.items():
            slow = name == "h5" and step >= 20
            if slow and step % 2:
                continue
            obs = report(hs, ev, t, took=20.0 if slow else 10.0, every=every, scale=2.0 if slow else 1.0)
            if obs is not None:
                out += engine.process(obs)
        out += engine.tick(at(t))
    return [o for o in out if str(getattr(getattr(o, "kind", ""), "value", "")).startswith("metric")]


def test_a_host_whose_agent_reports_at_half_the_rate_is_not_a_peer_deviation() -> None:
    assert half_rate_findings(every=10.0) == []
    # the same reports from an agent that does not say its configured interval: the counts look doubled
    assert {f.host_id for f in half_rate_findings(every=None)} == {"h5"}
