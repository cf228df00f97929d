"""Self-limits: over its CPU or memory budget the agent slows its probes down (never crashes) and says
what it shed; well under budget for long enough, it speeds back up."""

from __future__ import annotations

import pytest

from collectors import budget as budget_module
from collectors.agent import Agent
from collectors.budget import Budget, thread_cpu
from collectors.probes.base import Emit, Probe
from collectors.settings import CollectorSettings
from contract.events import Kind
from contract.settings import KafkaSettings

UNREACHABLE = KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="unit")


class Counting(Probe):
    name = "counting"

    def __init__(self) -> None:
        super().__init__(interval=1.0, inventory_interval=None)
        self.runs = 0

    def collect(self, full: bool) -> list[Emit]:
        self.runs += 1
        return []


def test_budget_degrades_when_over_and_recovers_when_well_under() -> None:
    t = [0.0]
    cpu = [0.0]
    rss = [30e6]
    budget = Budget(cpu_pct=1.0, rss_mb=50, window_s=20, max_level=3, sample=lambda: (cpu[0], rss[0]),
                    clock=lambda: t[0], check_every_s=1.0)
    levels = []
    for _ in range(60):  # burning 5% of a core
        t[0] += 1
        cpu[0] += 0.05
        budget.check()
        levels.append(budget.level)
    assert levels[-1] == 3 and levels == sorted(levels)  # stepped down one level at a time, capped
    assert 4.9 < budget.cpu_pct < 5.1
    for _ in range(200):  # idle again
        t[0] += 1
        budget.check()
    assert budget.level < 3

    rss[0] = 80e6  # memory over budget degrades even when CPU is fine
    t[0] += 100
    budget.check()
    assert budget.rss_bytes == 80e6 and budget.peak_rss == 80e6


def test_agent_runs_probes_less_often_and_reports_the_shed(agent_settings: CollectorSettings) -> None:
    mono = [0.0]
    probe = Counting()
    budget = Budget(sample=lambda: (0.0, 1.0), clock=lambda: mono[0])
    agent = Agent(agent_settings.copy(heartbeat_interval_s=1000.0), UNREACHABLE,
                  probes=[probe], budget=budget, mono=lambda: mono[0])
    agent.cycle(first=True)
    budget.level = 2  # four times slower
    for _ in range(40):
        mono[0] += 1.0
        agent.cycle()
    assert 9 <= probe.runs <= 12  # about every 4 s instead of every second
    kind, payload = agent.heartbeat()
    assert kind is Kind.HEARTBEAT and payload["degrade_level"] == 2
    assert payload["shed"]["counting"] == 3 * (probe.runs - 1)
    agent.delivery.close()


def test_own_and_kafka_client_cpu_come_from_one_reading_of_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    readings: list[tuple[float, float]] = [(1.0, 10.0), (2.0, 40.0)]
    calls = [0]

    def thread_cpu(task_dir: str = "") -> tuple[float, float]:
        calls[0] += 1
        return readings[min(calls[0], len(readings)) - 1]

    monkeypatch.setattr(budget_module, "thread_cpu", thread_cpu)
    t = [0.0]
    budget = Budget(clock=lambda: t[0], check_every_s=5.0)
    budget.check()
    t[0] = 10.0
    budget.check()
    assert calls[0] == 2  # one reading per check, for both figures
    assert budget.cpu_pct == pytest.approx(10.0) and budget.client_cpu_pct == pytest.approx(300.0)


def test_thread_cpu_reads_this_process() -> None:
    own, client = thread_cpu()
    sum(range(3_000_000))
    again = thread_cpu()
    assert again[0] > own and again[1] >= client >= 0.0
