"""The lab: a real clone fleet on one Linux machine (root only).

Each host has its own network, PID, mount and UTS namespaces on a lab bridge, per-host copies of its
configuration bind-mounted over the real paths, normal life (services, jobs, logins, log rotation) and a
real `herdwatch collect`. A schedule drives fleet life (config pushes, autoscaling, agent restarts,
reboots, a rollout and a rollback) and attacks; the ground truth is what the schedule did, with wall times.

    images.py      image files (images/*.yaml): services, jobs, files, version
    netns.py       ip/unshare/nsenter commands: bridge, veth pairs, namespaces
    state.py       the state file under var/lab/: everything made, so `down` removes it after a crash
    hostinit.py    PID 1 of a host: mounts, hostname, services, jobs, the agent, control requests
    attacks.py     the attack library, run inside a chosen host
    fleet.py       the Lab: up, hosts, fleet life, attacks, down
    schedule.py    timed steps: the short CI schedule and the 10-minute mixed one
    report.py      the simulator's report over the lab's anomaly topic and store
    workloads/     programs run inside hosts (services, attacker side); never part of the agent
"""
