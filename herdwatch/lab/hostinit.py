"""PID 1 of a lab host (run by the lab inside the host's fresh PID, mount and UTS namespaces):

    python -m herdwatch.lab.hostinit SPEC.json

Bind-mounts the host's own copies of its configuration over the real paths (and again whenever the machine
replaces one of those paths, which detaches the mount), sets the hostname, starts
the image's services (restarted when they die) and its periodic jobs (each run a short-lived child),
runs `herdwatch collect` (restarted when it exits), reaps every orphan, and obeys requests dropped into
its control folder: `restart-agent` (an agent restart) and `stop`. SIGTERM stops the host gracefully:
the agent first, so it says goodbye; the kernel ends whatever is left when this process exits.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

TICK_S = 0.2
AGENT_STOP_S = 15.0


class Host:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.control = Path(spec["control_dir"])
        self.log_dir = Path(spec["log_dir"])
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self.agent: subprocess.Popen[bytes] | None = None
        self.stopping = False
        rng = random.Random(spec["hostname"])
        self.due = {j["name"]: time.monotonic() + rng.uniform(0, float(j["every"])) for j in spec["jobs"]}
        self.devnull: IO[bytes] = open(os.devnull, "wb")  # noqa: SIM115 - lives as long as the host

    def setup(self) -> None:
        socket.sethostname(self.spec["hostname"])
        for src, dst in self.spec["mounts"]:
            subprocess.run(["mount", "--bind", src, dst], check=True)

    def keep_mounts(self) -> list[str]:
        """Bind again each copy whose mount is gone, and return their paths. When the machine replaces a
        file that a host's copy is mounted over (a package install renames a new /etc/passwd over the old
        one), the kernel detaches the mounts on the replaced file in every other mount namespace, and the
        host reads the machine's file instead of its own: its agent reported a passwd none of its clones
        had. A path the machine removed is left alone (nothing to mount on)."""
        again = []
        for src, dst in self.spec["mounts"]:
            try:
                own, seen = os.stat(src), os.stat(dst)
            except OSError:
                continue
            if (own.st_dev, own.st_ino) != (seen.st_dev, seen.st_ino):
                subprocess.run(["mount", "--bind", src, dst], check=True)
                again.append(dst)
        if again:
            print(f"hostinit: mounted again over {', '.join(again)} (the machine replaced them)", file=sys.stderr,
                  flush=True)
        return again

    def log(self, name: str) -> IO[bytes]:
        return open(self.log_dir / f"{name}.log", "ab")

    def start_service(self, name: str, argv: list[str]) -> None:
        with self.log(name) as out:
            self.services[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd="/",
                                                   stdin=subprocess.DEVNULL)

    def start_agent(self) -> None:
        agent = self.spec["agent"]
        with self.log("agent") as out:
            self.agent = subprocess.Popen(agent["argv"], env=agent["env"], stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd="/")

    def stop_agent(self) -> None:
        if self.agent is None or self.agent.poll() is not None:
            return
        self.agent.terminate()
        try:
            self.agent.wait(AGENT_STOP_S)
        except subprocess.TimeoutExpired:
            self.agent.kill()
            self.agent.wait()

    def run_jobs(self) -> None:
        t = time.monotonic()
        for job in self.spec["jobs"]:
            if t >= self.due[job["name"]]:
                self.due[job["name"]] = t + float(job["every"]) * random.uniform(0.9, 1.1)
                subprocess.Popen(["/bin/sh", "-c", job["cmd"]], stdout=self.devnull, stderr=self.devnull,
                                 stdin=subprocess.DEVNULL, cwd="/")

    def supervise(self) -> None:
        for name, argv in self.spec["services"]:
            proc = self.services.get(name)
            if proc is None or proc.poll() is not None:
                self.start_service(name, argv)
        if self.agent is None or self.agent.poll() is not None:
            self.start_agent()

    def requests(self) -> None:
        for request in ("restart-agent", "stop"):
            path = self.control / request
            if path.exists():
                path.unlink()
                if request == "stop":
                    self.stopping = True
                else:
                    self.stop_agent()
                    self.start_agent()

    def reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        self.setup()
        (self.control / "ready").write_text(str(os.getpid()))
        while not self.stopping:
            self.keep_mounts()
            self.supervise()
            self.run_jobs()
            self.requests()
            time.sleep(TICK_S)
            self.reap()
        self.stop_agent()
        for proc in self.services.values():
            if proc.poll() is None:
                proc.terminate()
        return 0


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    return Host(spec).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
