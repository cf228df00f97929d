"""`herdwatch lab up|attack|down|report|run|rescore`: a real clone fleet on this machine (root only).

`up` starts the lab's Kafka, worker, sink and hosts and returns (they keep running); `attack` runs one
attack of the library in a live host; `report` prints the detection report; `down` removes every
namespace, link, mount target and process the lab made, also after a crash. `run` does it all with a
schedule of fleet life and attacks (`make lab`: `run --plan full`). `rescore --dir var/lab/<lab id>` scores a
finished lab's findings again with today's evaluation rules (files only: no root, no Kafka). See docs/lab.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from contract.settings import default_var_dir

ACTIONS = ["up", "attack", "down", "report", "run", "rescore"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="a real clone fleet on this machine: namespaced hosts, real agents, attacks "
                                   "(root only)",
                       description="Hosts in their own network, PID, mount and UTS namespaces on a bridge, each "
                                   "running `herdwatch collect`, normal life and scheduled attacks; the report "
                                   "matches the findings against what the lab did. Needs root. docs/lab.md.")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("attack", nargs="?", default=None, help="for attack: the attack's name (see docs/lab.md)")
    p.add_argument("--var", type=Path, default=None, help="data folder (default ./var; the lab lives in var/lab/)")
    p.add_argument("--dir", type=Path, default=None, help="for rescore: a finished lab's folder (var/lab/<lab id>)")
    p.add_argument("--subnet", default="10.213.47", help="first three octets of the lab's private /24 "
                                                         "(default 10.213.47)")
    p.add_argument("--hosts", type=int, default=4, help="for up: web hosts to start (default 4)")
    p.add_argument("--image", default="web", help="for up: the hosts' image (herdwatch/lab/images/; default web)")
    p.add_argument("--host", default=None, help="for attack: slot (web-1) or host id (default: the second host)")
    p.add_argument("--duration", type=float, default=90.0, help="for attack: seconds the attack lasts (default 90)")
    p.add_argument("--plan", choices=["ci", "full", "long"], default="full",
                   help="for run: ci (4 hosts, ~3.5 min), full (8 hosts, ~10 min; default) or long (12 hosts, "
                        "--minutes of normal life, rollout, rollback and every attack)")
    p.add_argument("--minutes", type=float, default=65.0, help="for run --plan long: its length (default 65)")
    p.add_argument("--hours", type=float, default=None,
                   help="for run: instead of a plan, this many hours of normal life only on 8 hosts (false alarms "
                        "per host-hour; see docs/benchmarks.md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "rescore":  # a finished lab's report with today's evaluation rules: files only, no root
        from herdwatch.lab.report import rescore_lab_report

        if args.dir is None:
            print("herdwatch lab rescore needs --dir var/lab/<lab id> (a finished lab's folder)", file=sys.stderr)
            return 2
        try:
            rescore_lab_report(args.dir)
        except FileNotFoundError as e:
            print(e, file=sys.stderr)
            return 2
        return 0
    if os.geteuid() != 0:
        print("herdwatch lab needs root: it makes network, PID, mount and UTS namespaces, veth pairs and a "
              "bridge. Run it as root (sudo .venv/bin/herdwatch lab ...).", file=sys.stderr)
        return 2
    from herdwatch.lab.fleet import Lab
    from herdwatch.lab.state import iso, load_current, now

    var = (args.var or default_var_dir()).resolve()
    if args.action == "run":
        from herdwatch.lab.runner import run_plan
        from herdwatch.lab.schedule import PLANS, long_plan, soak_plan

        if args.hours:
            plan = soak_plan(args.hours)
        elif args.plan == "long":
            plan = long_plan(getattr(args, "minutes", 65.0))
        else:
            plan = PLANS[args.plan]()
        report, _ = run_plan(var, plan, subnet=args.subnet)
        return 0 if all(v is not False for v in report.get("targets", {}).values()) else 3
    if args.action == "up":
        from herdwatch.lab.images import load_image

        lab = Lab.up(var, subnet=args.subnet)
        try:
            family = load_image(args.image).family
            lab.state.web_slots = args.hosts if family == "web" else 0
            for i in range(args.hosts):
                h = lab.add_host(args.image, slot=f"{family}-{i}")
                print(f"host {h.host_id} ({h.slot}, {h.image_id}) at {h.ip}")
        except BaseException:
            lab.down()
            raise
        print(f"lab {lab.state.lab_id} is up (state {lab.state.path}); `herdwatch lab attack NAME --host SLOT`, "
              f"`herdwatch lab report`, `herdwatch lab down`")
        return 0
    state = load_current(var)
    if state is None:
        print(f"no lab is up under {var / 'lab'} (`herdwatch lab up` starts one)")
        return 0 if args.action == "down" else 3
    lab = Lab(state)
    if args.action == "down":
        removed = lab.down()
        print(f"lab {state.lab_id} down: removed {len(removed)}: {', '.join(removed) or 'nothing left'}")
    elif args.action == "report":
        from herdwatch.lab.report import build_lab_report, wait_for_pipeline

        wait_for_pipeline(state, print, timeout=60)
        build_lab_report(state)
    else:
        from herdwatch.lab.attacks import attack_names

        if args.attack not in attack_names():
            print(f"name an attack: {', '.join(attack_names())}", file=sys.stderr)
            return 2
        live = state.live_hosts()
        host = state.host(args.host) if args.host else live[min(1, len(live) - 1)]
        start = now()
        running = lab.attack(args.attack, host)
        print(f"attack {args.attack} on {host.host_id} ({host.slot}) for {args.duration:.0f} s ...")
        time.sleep(args.duration)
        lab.stop_attack(running)
        lab.record_truth({"scenario": f"{args.attack}-{host.slot}-{start:%H%M%S}", "kind": "compromise",
                          "attack": args.attack, "host_id": host.host_id, "image_family": host.family,
                          "start": iso(start), "end": iso(now()), "hosts": [], "details": {"slot": host.slot}})
    return 0
