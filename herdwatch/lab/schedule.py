"""Timed steps that drive a lab: fleet life and attacks, with the ground truth they make (wall times).

A schedule is a list of `Step`s (seconds after the lab is up). Rollouts and rollbacks expand into one
host replacement per `every` seconds; attacks with a duration get their stop step; autoscaled hosts get
their scale-in step. `run_schedule` sleeps until each step and does it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from herdwatch.lab.attacks import ATTACKS, RunningAttack
from herdwatch.lab.fleet import Lab
from herdwatch.lab.images import load_image
from herdwatch.lab.state import HostRecord, iso, now

Say = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    at: float
    action: str
    """attack | stop | config_push | scale_out | scale_in | agent_restart | reboot | replace | drift"""
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    name: str
    hosts: dict[str, int]
    """image -> initial hosts"""
    warmup_s: float
    duration_s: float
    steps: list[Step]


def attack(at: float, name: str, slot: str, duration: float, scenario: str | None = None) -> list[Step]:
    scenario = scenario or f"{name}-{slot}"
    return [Step(at, "attack", {"attack": name, "slot": slot, "scenario": scenario, "duration": duration}),
            Step(at + duration, "stop", {"scenario": scenario})]


def rollout(at: float, slots: list[str], to: str, every: float, kind: str, scenario: str) -> list[Step]:
    return [Step(at + i * every, "replace", {"slot": s, "image": to, "kind": kind, "scenario": scenario})
            for i, s in enumerate(slots)]


def scale_out(at: float, image: str, lifetime: float, slot: str) -> list[Step]:
    return [Step(at, "scale_out", {"image": image, "slot": slot}), Step(at + lifetime, "scale_in", {"slot": slot})]


def decay(start: float, end: float, slots: list[str], drifts: list[str], until: float) -> list[Step]:
    """Hosts drifting by hand: slot i makes drift i, at times spread evenly from `start` to `end` (a decaying
    image); each stays until `until` (the end of the plan)."""
    gap = (end - start) / max(1, len(slots) - 1)
    return [Step(round(start + i * gap), "drift", {"slot": slot, "drift": name, "until": until})
            for i, (slot, name) in enumerate(zip(slots, drifts, strict=True))]


def ci_plan() -> Plan:
    """4 web hosts, about 3.5 minutes: three attacks, fleet life, then a clean rollout to web-v2."""
    steps = [
        *attack(50, "cryptominer", "web-1", 80),
        *attack(55, "reverse_shell", "web-2", 75),
        *attack(60, "backdoor_port", "web-3", 70),
        Step(70, "agent_restart", {"slot": "web-0"}),
        Step(80, "config_push", {"family": "web", "scenario": "hosts-push"}),
        *rollout(140, ["web-1", "web-2", "web-3", "web-0"], "web-v2", 12, "rollout", "web-rollout"),
    ]
    return Plan("lab-ci", {"web": 4}, warmup_s=45, duration_s=215, steps=steps)


def full_plan() -> Plan:
    """8 hosts (5 web, 3 worker), about 10 minutes: every attack, a campaign, all of fleet life."""
    steps = [
        *attack(90, "cryptominer", "web-1", 120),
        *attack(100, "reverse_shell", "worker-0", 120),
        Step(110, "config_push", {"family": "web", "scenario": "hosts-push"}),
        *attack(120, "backdoor_port", "web-2", 120),
        *scale_out(130, "worker", 150, "worker-auto-0"),
        *attack(150, "sshd_tamper", "web-3", 240),
        Step(160, "agent_restart", {"slot": "web-0"}),
        *attack(180, "authorized_key", "worker-1", 240),
        *attack(200, "unusual_login", "web-4", 120),
        *scale_out(210, "worker", 240, "worker-auto-1"),
        Step(220, "reboot", {"slot": "worker-2"}),
        *attack(240, "dropper", "web-0", 120),
        *attack(260, "container_hog", "worker-2", 120),
        *attack(300, "cryptominer", "web-2", 100, "campaign-web-2"),
        *attack(305, "cryptominer", "web-3", 95, "campaign-web-3"),
        *attack(310, "cryptominer", "web-4", 90, "campaign-web-4"),
        *rollout(420, [f"web-{i}" for i in range(5)], "web-v2", 15, "rollout", "web-rollout"),
        *rollout(510, [f"web-{i}" for i in (0, 1, 2)], "web", 15, "rollback", "web-rollback"),
    ]
    return Plan("lab", {"web": 5, "worker": 3}, warmup_s=90, duration_s=600, steps=steps)


def soak_plan(hours: float) -> Plan:
    """8 hosts of normal life only, for false alarms per host-hour over a long run: every 10 minutes a config
    push, an agent restart, a reboot and an autoscaled host living 1-10 minutes; every 2 hours a rollout of
    the web image to web-v2 and, an hour later, back to web (as a rollout, not a rollback: it completes)."""
    steps: list[Step] = []
    duration = hours * 3600.0
    for k, at in enumerate(range(600, int(duration) - 600, 600)):
        steps.append(Step(at, "config_push", {"family": "web" if k % 2 == 0 else "worker",
                                              "scenario": f"hosts-push-{k}"}))
        steps.append(Step(at + 60, "agent_restart", {"slot": f"web-{k % 5}"}))
        steps.append(Step(at + 120, "reboot", {"slot": f"worker-{k % 3}"}))
        steps += scale_out(at + 180, "worker", 60 + (k * 97) % 540, f"worker-auto-{k}")
    for k, at in enumerate(range(3600, int(duration) - 3600, 7200)):
        web = [f"web-{i}" for i in range(5)]
        steps += rollout(at, web, "web-v2", 30, "rollout", f"web-rollout-{k}")
        steps += rollout(at + 3600, web, "web", 30, "rollout", f"web-rollout-back-{k}")
    return Plan(f"lab-soak-{hours:g}h", {"web": 5, "worker": 3}, warmup_s=300, duration_s=duration, steps=steps)


def long_plan(minutes: float = 65.0, web: int = 7, worker: int = 5) -> Plan:
    """`web` + `worker` hosts (default 12) for `minutes` (default 65): the images' own normal life (jobs
    spawning short-lived children, forking services, log rotation, cron, user logins) and, every 10 minutes,
    a config push, an agent restart, a host restart and an autoscaled worker living 1-9 minutes; a rollout of
    every web host to web-v2 at a third of the run and a rollback of all of them at two thirds; every attack of
    the library once, spread over the run on hosts the fleet life is not touching, and a two-host campaign;
    and a decaying worker image: three workers no attack touches (worker-0, -2, -4) each drift by hand once
    (sshd X11 forwarding on, sshd_config readable by all, IPv4 forwarding on), spread from a minute after the
    warm-up to five minutes before the end."""
    duration = minutes * 60.0
    steps: list[Step] = []
    for k, at in enumerate(range(300, int(duration) - 300, 600)):
        steps.append(Step(at, "config_push", {"family": "web" if k % 2 == 0 else "worker",
                                              "scenario": f"hosts-push-{k}"}))
        steps.append(Step(at + 60, "agent_restart", {"slot": f"worker-{k % worker}"}))
        steps.append(Step(at + 120, "reboot", {"slot": f"worker-{(k + 2) % worker}"}))
        steps += scale_out(at + 180, "worker", 60 + (k * 97) % 480, f"worker-auto-{k}")
    webs = [f"web-{i}" for i in range(web)]
    rollout_at, rollback_at = round(duration / 3), round(2 * duration / 3)
    steps += rollout(rollout_at, webs, "web-v2", 20, "rollout", "web-rollout")
    steps += rollout(rollback_at, webs, "web", 20, "rollback", "web-rollback")
    # attacks: outside the rollout/rollback windows (their hosts are replaced) and never on a host that is
    # restarting, so each attack's host lives through the attack
    span = 20 * web + 60
    free = [t for t in range(360, int(duration) - 300, 150)
            if not (rollout_at - 300 <= t <= rollout_at + span or rollback_at - 300 <= t <= rollback_at + span)]
    names = ["cryptominer", "reverse_shell", "backdoor_port", "sshd_tamper", "authorized_key", "unusual_login",
             "dropper", "container_hog"]
    slots = ["web-1", "worker-1", "web-3", "web-4", "web-5", "web-6", "web-0", "worker-3"]
    pick = free[:: max(1, len(free) // (len(names) + 1))]
    for name, slot, at in zip(names, slots, pick, strict=False):
        steps += attack(at, name, slot, 120)
    if len(pick) > len(names):
        at = pick[len(names)]
        steps += attack(at, "cryptominer", "web-5", 120, "campaign-web-5")
        steps += attack(at + 5, "cryptominer", "web-6", 115, "campaign-web-6")
    drifting = [f"worker-{i}" for i in range(0, worker, 2)][:3]
    names = ["sshd-x11", "sshd-config-mode", "ip-forward"][: len(drifting)]
    steps += decay(300, max(300.0, duration - 300), drifting, names, duration)
    return Plan(f"lab-long-{minutes:g}m", {"web": web, "worker": worker}, warmup_s=240, duration_s=duration,
                steps=steps)


PLANS = {"ci": ci_plan, "full": full_plan, "long": long_plan}


def _truth(lab: Lab, scenario: str) -> dict[str, Any] | None:
    return next((r for r in lab.state.truth if r["scenario"] == scenario), None)


class Driver:
    def __init__(self, lab: Lab, say: Say) -> None:
        self.lab, self.say = lab, say
        self.running: dict[str, RunningAttack] = {}

    def do(self, step: Step) -> None:
        a, lab = step.args, self.lab
        t = now()
        if step.action == "attack":
            host = lab.state.host(a["slot"])
            running = lab.attack(a["attack"], host)
            self.running[a["scenario"]] = running
            lab.record_truth({"scenario": a["scenario"], "kind": "compromise", "attack": a["attack"],
                              "host_id": host.host_id, "image_family": host.family, "start": iso(t),
                              "end": iso(t + timedelta(seconds=a["duration"])), "hosts": [],
                              "details": {"slot": host.slot,
                                          "evidence": list(ATTACKS[a["attack"]].evidence)}})
            self.say(f"  attack {a['attack']} on {host.host_id} ({host.slot})")
        elif step.action == "stop":
            if a["scenario"] in self.running:
                lab.stop_attack(self.running.pop(a["scenario"]))
            if (row := _truth(lab, a["scenario"])) is not None:
                row["end"] = iso(t)
                lab.state.save()
        elif step.action == "config_push":
            hosts = lab.config_push(a["family"], f"{lab.state.bridge_ip} config.lab.internal")
            lab.record_truth({"scenario": a["scenario"], "kind": "config_push", "attack": "config_push",
                              "host_id": None, "image_family": a["family"], "start": iso(t),
                              "end": iso(t + timedelta(seconds=60)), "hosts": [h.host_id for h in hosts],
                              "details": {"file": "/etc/hosts"}})
            self.say(f"  config push to {len(hosts)} {a['family']} hosts")
        elif step.action == "scale_out":
            host = lab.add_host(a["image"], slot=a["slot"])
            lab.note("scale_out", host)
            self.say(f"  scale out: {host.host_id} ({host.slot})")
        elif step.action == "scale_in":
            host = lab.state.host(a["slot"])
            lab.remove_host(host)
            lab.note("scale_in", host)
            self.say(f"  scale in: {host.host_id} destroyed")
        elif step.action == "agent_restart":
            lab.restart_agent(lab.state.host(a["slot"]))
            self.say(f"  agent restart on {a['slot']}")
        elif step.action == "reboot":
            lab.reboot(lab.state.host(a["slot"]))
            self.say(f"  reboot of {a['slot']}")
        elif step.action == "drift":
            host = lab.state.host(a["slot"])
            drift = lab.drift(host, a["drift"])
            lab.record_truth({"scenario": f"drift-{a['slot']}-{drift.name}", "kind": "drift",
                              "attack": "drift: " + ", ".join(f"{k}={v}" for k, v in drift.changes.items()),
                              "host_id": host.host_id, "image_family": host.family, "start": iso(t),
                              "end": iso(t + timedelta(seconds=max(0.0, a["until"] - step.at))), "hosts": [],
                              "details": {"slot": host.slot, "changes": dict(drift.changes),
                                          "evidence": list(drift.evidence), "image_id": host.image_id}})
            self.say(f"  drift on {host.host_id} ({host.slot}): {drift.description}")
        elif step.action == "replace":
            old = lab.state.host(a["slot"])
            new = lab.replace(old, a["image"])
            row = _truth(lab, a["scenario"])
            if row is None:
                image = load_image(a["image"])
                row = {"scenario": a["scenario"], "kind": a["kind"], "attack": a["kind"], "host_id": None,
                       "image_family": image.family, "start": iso(t), "end": iso(t), "hosts": [],
                       "details": {"from": old.image_id, "to": image.image_id}}
                lab.record_truth(row)
            row["end"], row["hosts"] = iso(now()), [*row["hosts"], new.host_id]
            lab.state.save()
            self.say(f"  {a['kind']}: {old.host_id} -> {new.host_id} ({a['image']})")
        else:
            raise ValueError(f"unknown step action {step.action!r}")

    def stop_all(self) -> None:
        for scenario in list(self.running):
            self.do(Step(0, "stop", {"scenario": scenario}))


def start_hosts(lab: Lab, plan: Plan, say: Say) -> list[HostRecord]:
    hosts = []
    lab.state.web_slots = sum(n for image, n in plan.hosts.items() if load_image(image).family == "web")
    for image, count in plan.hosts.items():
        for i in range(count):
            hosts.append(lab.add_host(image, slot=f"{load_image(image).family}-{i}"))
            say(f"  host {hosts[-1].host_id} ({hosts[-1].slot}, {hosts[-1].image_id}) at {hosts[-1].ip}")
    return hosts


def run_schedule(lab: Lab, plan: Plan, say: Say, t0: float | None = None) -> None:
    """Do every step of `plan` at its time after `t0` (monotonic; default now), then wait out the plan."""
    t0 = time.monotonic() if t0 is None else t0
    driver = Driver(lab, say)
    try:
        for step in sorted(plan.steps, key=lambda s: s.at):
            wait = t0 + step.at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            say(f"[t+{time.monotonic() - t0:4.0f}s]")
            driver.do(step)
        rest = t0 + plan.duration_s - time.monotonic()
        if rest > 0:
            time.sleep(rest)
    finally:
        driver.stop_all()
