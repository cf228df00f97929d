"""A real Apache Kafka broker (KRaft, one node) for this machine, started with plain `java`.

The jars come from Maven Central via deploy/kafka/pom.xml (built on first use). Data and logs live
under <var>/kafka/. Used by `herdwatch kafka start|stop|status`, the demo and the test fixtures.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

KAFKA_HOME = Path(os.environ.get("HERDWATCH_KAFKA_HOME", Path(__file__).resolve().parents[1] / "deploy" / "kafka"))
READY_LINE = "Kafka Server started"
JVM_OPTS = ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true"]


class KafkaLocalError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_jars(home: Path = KAFKA_HOME) -> Path:
    """Assemble the broker's jars from Maven Central if they are not there yet."""
    libs = home / "libs"
    if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise KafkaLocalError("Maven (mvn) is needed once to fetch the Kafka jars: install it "
                              "(apt-get install maven) or set HERDWATCH_KAFKA_HOME to a folder with libs/")
    if not shutil.which("java"):
        raise KafkaLocalError("Java 17+ is needed to run Kafka: install a JDK (apt-get install openjdk-17-jre)")
    result = subprocess.run([mvn, "-B", "-q", "-f", str(home / "pom.xml"), "package"],
                            capture_output=True, text=True)
    if result.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        raise KafkaLocalError(f"fetching Kafka jars failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return libs


@dataclass
class LocalKafka:
    """One broker whose state lives in `root` (data/, server.log, server.properties, kafka.pid)."""

    root: Path
    port: int = 9092
    controller_port: int = 9093

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    @classmethod
    def from_root(cls, root: Path, port: int = 9092, controller_port: int = 9093) -> LocalKafka:
        """Reuse the ports a previous start wrote down, so `stop`/`status` need no flags."""
        ports = root / "ports"
        if ports.exists():
            p, c = ports.read_text().split()
            return cls(root, int(p), int(c))
        return cls(root, port, controller_port)

    def start(self, timeout: float = 90.0) -> None:
        if self.is_running():
            return
        libs = ensure_jars()
        self.root.mkdir(parents=True, exist_ok=True)
        data = self.root / "data"
        props = self.root / "server.properties"
        template = (KAFKA_HOME / "server.properties.template").read_text()
        props.write_text(template.format(port=self.port, controller_port=self.controller_port, data_dir=data))
        (self.root / "ports").write_text(f"{self.port} {self.controller_port}")
        java = shutil.which("java") or "java"
        classpath = f"{libs}/*"
        log_opts = [f"-Dlog4j2.configurationFile={KAFKA_HOME / 'log4j2.properties'}",
                    f"-Dkafka.logs.dir={self.root}"]
        if not (data / "meta.properties").exists():
            fmt = subprocess.run([java, *log_opts, "-cp", classpath, "kafka.tools.StorageTool", "format",
                                  "-t", "aGVyZHdhdGNoLWxvY2Fs", "-c", str(props), "--ignore-formatted"],
                                 capture_output=True, text=True)
            if fmt.returncode != 0:
                raise KafkaLocalError(f"kafka storage format failed: {fmt.stdout}\n{fmt.stderr}")
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.root / "stdout.log", "ab") as out:
            proc = subprocess.Popen([java, *JVM_OPTS, *log_opts, "-cp", classpath, "kafka.Kafka", str(props)],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise KafkaLocalError(f"Kafka exited with {proc.returncode}; see {self.root / 'stdout.log'} "
                                      f"and {self.log_file}")
            if self.log_file.exists():
                with open(self.log_file, "rb") as f:
                    f.seek(offset)
                    if READY_LINE.encode() in f.read():
                        return
            time.sleep(0.2)
        self.stop()
        raise KafkaLocalError(f"Kafka did not report '{READY_LINE}' within {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                # reap if it is our child
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """Stop the broker abruptly (SIGKILL), for outage tests."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                time.sleep(0.5)
            self.pid_file.unlink(missing_ok=True)

    def status(self) -> str:
        pid = self.pid()
        return f"running (pid {pid}) on {self.bootstrap}" if pid else "stopped"
