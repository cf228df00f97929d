"""A real Apache Kafka broker (KRaft, one node) for this machine, started with plain `java`.

The jars come from Maven Central via deploy/kafka/pom.xml (built on first use). Data and logs live
under <var>/kafka/. Used by `herdwatch kafka start|stop|status`, the demo and the test fixtures.

With `secure=True` the broker has one SASL_SSL listener (SCRAM-SHA-512 over TLS, a local CA made with
openssl), the StandardAuthorizer (no ACL: no access) and one SCRAM user per role (ROLES), created at
format time. Generated passwords are kept in <root>/credentials.env (mode 0600); `provision` creates
a deployment's topics and grants each role only what it needs (`role_acls`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from contract.settings import KafkaSettings

KAFKA_HOME = Path(os.environ.get("HERDWATCH_KAFKA_HOME", Path(__file__).resolve().parents[1] / "deploy" / "kafka"))
READY_LINE = "Kafka Server started"
JVM_OPTS = ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true"]


ROLES = ("agent", "worker", "sink", "subscriber", "admin")
"""One SCRAM user per role; the user name is the role. `admin` is a super user (topics, ACLs)."""
CONTROLLER_USER = "controller"
"""The broker's own user on the controller listener (SASL/PLAIN: KRaft controllers cannot use SCRAM)."""
SCRAM_MECHANISM: Literal["SCRAM-SHA-512"] = "SCRAM-SHA-512"
SUBSCRIBER_GROUP_PREFIX = "herdwatch-anomalies-"
"""Consumer groups subscribers of the default deployment may use (`herdwatch anomalies` names its private groups
`<deployment>-anomalies-*`; contract.topics.TopicNames.subscriber_group_prefix)."""


class KafkaLocalError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on host:port (bound as Kafka binds: with SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def port_holder(port: int) -> str:
    """Who listens on TCP `port`: "pid 123 (java -cp ... kafka.Kafka)" from `ss -ltnp` or /proc; or a plain
    "another process" when neither tells (no permission to see its fds)."""
    ss = shutil.which("ss")
    if ss:
        out = subprocess.run([ss, "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
        for pid in _ss_pids(out):
            return _describe_pid(pid)
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if inodes:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in (proc / "fd").iterdir():
                    with contextlib.suppress(OSError):
                        link = os.readlink(fd)
                        if link.startswith("socket:[") and link[8:-1] in inodes:
                            return _describe_pid(int(proc.name))
    return "another process (run `ss -ltnp` as root to see which)"


def _ss_pids(text: str) -> list[int]:
    pids = []
    for part in text.split("pid=")[1:]:
        digits = part.split(",", 1)[0]
        if digits.isdigit():
            pids.append(int(digits))
    return pids


def _describe_pid(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    if len(cmd) > 120:
        cmd = cmd[:80] + " ... " + cmd[-35:]
    return f"pid {pid} ({cmd or '?'})"


def check_ports(ports: dict[str, int]) -> None:
    """Raise a KafkaLocalError naming the first taken port, who holds it and how to get around it."""
    for what, port in ports.items():
        if port_taken(port):
            raise KafkaLocalError(
                f"{what} port {port} on 127.0.0.1 is taken by {port_holder(port)}: stop that process, start on "
                f"other ports (`herdwatch kafka start --port N --controller-port M`; `herdwatch demo` picks free "
                f"ones itself), or, if it is a Kafka broker you want to use, set "
                f"HERDWATCH_KAFKA_BOOTSTRAP=127.0.0.1:{port}")


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
    secure: bool = False
    listen: str | None = None
    """An extra plaintext listener "ADDR[:PORT]" (port default: `port` + 2), advertised as itself, so clients in
    other network namespaces (the lab's hosts on its bridge) reach the broker; loopback clients are unchanged."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def listen_address(self) -> str | None:
        """The extra listener as "ADDR:PORT" (None without one)."""
        if not self.listen:
            return None
        host, sep, port = self.listen.rpartition(":")
        # Kafka refuses two IPv4 listeners on one port, whatever their addresses
        return self.listen if sep and host and port.isdigit() else f"{self.listen}:{self.port + 2}"

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

    @property
    def credentials_file(self) -> Path:
        return self.root / "credentials.env"

    @property
    def ca_file(self) -> Path:
        return self.root / "tls" / "ca.pem"

    @classmethod
    def from_root(cls, root: Path, port: int = 9092, controller_port: int = 9093) -> LocalKafka:
        """Reuse the ports (and mode) a previous start wrote down, so `stop`/`status` need no flags."""
        ports = root / "ports"
        if ports.exists():
            words = ports.read_text().split()
            listen = next((w.removeprefix("listen=") for w in words[2:] if w.startswith("listen=")), None)
            return cls(root, int(words[0]), int(words[1]), secure="secure" in words[2:], listen=listen)
        return cls(root, port, controller_port)

    def start(self, timeout: float = 90.0) -> None:
        if self.is_running():
            self._check_mode(self.root / "data")
            return
        libs = ensure_jars()
        self.root.mkdir(parents=True, exist_ok=True)
        data = self.root / "data"
        self._check_mode(data)
        self.check_ports()
        props = self.root / "server.properties"
        template = (KAFKA_HOME / "server.properties.template").read_text()
        text = template.format(port=self.port, controller_port=self.controller_port, data_dir=data)
        format_extra: list[str] = []
        if self.listen_address and self.secure:
            raise KafkaLocalError("--listen adds a plaintext listener and cannot be combined with --secure "
                                  "(whose certificate names 127.0.0.1 only); start one or the other")
        if self.listen_address:
            text = with_overrides(text, self._listen_properties())
        if self.secure:
            self.root.chmod(0o700)
            passwords = self.passwords()
            self._ensure_tls(passwords["keystore"])
            text = with_overrides(text, self._secure_properties(passwords))
            for role in ROLES:  # SCRAM users exist from the first start: the broker itself logs in as admin
                secret = passwords[role].get_secret_value()
                format_extra += ["--add-scram", f"{SCRAM_MECHANISM}=[name={role},password={secret}]"]
        props.touch(mode=0o600)
        props.chmod(0o600)
        props.write_text(text)
        (self.root / "ports").write_text(f"{self.port} {self.controller_port}" + (" secure" if self.secure else "")
                                         + (f" listen={self.listen_address}" if self.listen_address else ""))
        java = shutil.which("java") or "java"
        classpath = f"{libs}/*"
        log_opts = [f"-Dlog4j2.configurationFile={KAFKA_HOME / 'log4j2.properties'}",
                    f"-Dkafka.logs.dir={self.root}"]
        if not (data / "meta.properties").exists():
            fmt = subprocess.run([java, *log_opts, "-cp", classpath, "kafka.tools.StorageTool", "format",
                                  "-t", "aGVyZHdhdGNoLWxvY2Fs", "-c", str(props), "--ignore-formatted",
                                  *format_extra],
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
        extra = f" and {self.listen_address}" if self.listen_address else ""
        return f"running (pid {pid}) on {self.bootstrap}{extra}" if pid else "stopped"

    def check_ports(self) -> None:
        """Before starting: every port the broker will bind is free (else: which one, taken by what)."""
        ports = {"Kafka client": self.port, "KRaft controller": self.controller_port}
        if self.listen_address:
            ports["--listen"] = int(self.listen_address.rpartition(":")[2])
        check_ports(ports)

    def _listen_properties(self) -> dict[str, str]:
        """Plain mode with a second plaintext listener (LAB) on `listen_address`, advertised as itself."""
        lab = f"LAB://{self.listen_address}"
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},{lab},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port},{lab}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,LAB:PLAINTEXT,CONTROLLER:PLAINTEXT",
        }

    # --- secure mode --------------------------------------------------------------------------------
    def _check_mode(self, data: Path) -> None:
        """A data folder formatted for one mode cannot be started in the other (SCRAM users live in it)."""
        marker = self.root / "mode"
        wanted = "secure" if self.secure else "plain"
        if (data / "meta.properties").exists():
            found = marker.read_text().strip() if marker.exists() else "plain"
            if found != wanted:
                flag = "--secure " if found == "secure" else ""
                raise KafkaLocalError(
                    f"{self.root} holds a {found} broker; start it as such (`herdwatch kafka start {flag}"
                    f"--root {self.root}`), or use another --root, or delete {data} to start over")
        marker.write_text(wanted + "\n")

    def passwords(self) -> dict[str, SecretStr]:
        """Every role's password (plus `controller` and `keystore`), generated on first use (file mode 0600)."""
        names = (*ROLES, CONTROLLER_USER, "keystore")
        if self.credentials_file.exists():
            found = read_env_file(self.credentials_file)
            missing = [n for n in names if f"{n.upper()}_PASSWORD" not in found]
            if missing:
                raise KafkaLocalError(f"{self.credentials_file} lacks {', '.join(missing)}: restore it, or "
                                      f"delete {self.root} to start a new secure broker")
            return {n: SecretStr(found[f"{n.upper()}_PASSWORD"]) for n in names}
        values = {n: secrets.token_urlsafe(24) for n in names}
        lines = [f"# Passwords of the local Kafka broker's users ({SCRAM_MECHANISM}; user name = role).",
                 "# `herdwatch kafka env --role ROLE` prints the HERDWATCH_KAFKA_* settings of one role.",
                 *(f"{n.upper()}_PASSWORD={v}" for n, v in values.items())]
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return {n: SecretStr(v) for n, v in values.items()}

    def _ensure_tls(self, keystore_password: SecretStr) -> None:
        """A local CA and a broker certificate for 127.0.0.1/localhost (PKCS#12 keystore), made once."""
        tls = self.ca_file.parent
        keystore = tls / "broker.p12"
        if keystore.exists() and self.ca_file.exists():
            return
        openssl = shutil.which("openssl")
        if not openssl:
            raise KafkaLocalError("openssl is needed to make the secure broker's certificates: "
                                  "apt-get install openssl")
        tls.mkdir(mode=0o700, parents=True, exist_ok=True)
        (tls / "broker.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
        steps = [
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "825",
             "-subj", "/CN=herdwatch local Kafka CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
             "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "broker.pem", "-days", "825", "-extfile", "broker.ext"],
            ["pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
             "-name", "broker", "-out", "broker.p12", "-passout", "env:HERDWATCH_KEYSTORE_PASSWORD"],
        ]
        env = {**os.environ, "HERDWATCH_KEYSTORE_PASSWORD": keystore_password.get_secret_value()}
        for step in steps:
            result = subprocess.run([openssl, *step], cwd=tls, capture_output=True, text=True, env=env)
            if result.returncode != 0:
                raise KafkaLocalError(f"openssl {step[0]} failed while making {tls}: {result.stderr[-2000:]}")
        for name in ("ca.key", "broker.key", "broker.csr", "broker.ext", "ca.srl"):
            (tls / name).unlink(missing_ok=True)  # the CA key is not kept: a new cert means a new CA
        for path in tls.iterdir():
            path.chmod(0o600 if path.name == "broker.p12" else 0o644)

    def _secure_properties(self, passwords: dict[str, SecretStr]) -> dict[str, str]:
        admin = passwords["admin"].get_secret_value()
        controller = passwords[CONTROLLER_USER].get_secret_value()
        keystore = passwords["keystore"].get_secret_value()
        return {
            "listeners": f"CLIENT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "CLIENT:SASL_SSL,CONTROLLER:SASL_SSL",
            "inter.broker.listener.name": "CLIENT",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            "listener.name.client.scram-sha-512.sasl.jaas.config":
                f'org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" '
                f'password="{admin}";',
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config":
                f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{CONTROLLER_USER}" '
                f'password="{controller}" user_{CONTROLLER_USER}="{controller}";',
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.ca_file.parent / "broker.p12"),
            "ssl.keystore.password": keystore,
            "ssl.key.password": keystore,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "ssl.client.auth": "none",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:admin;User:{CONTROLLER_USER}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def client_settings(self, role: str, topic_prefix: str = "herdwatch") -> KafkaSettings:
        """KafkaSettings for one role (secure mode) or plain settings (plain mode)."""
        if not self.secure:
            return KafkaSettings(bootstrap=self.bootstrap, topic_prefix=topic_prefix)
        if role not in ROLES:
            raise KafkaLocalError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        return KafkaSettings(bootstrap=self.bootstrap, topic_prefix=topic_prefix, security_protocol="SASL_SSL",
                             sasl_mechanism=SCRAM_MECHANISM, sasl_username=role,
                             sasl_password=self.passwords()[role], ssl_cafile=self.ca_file)

    def role_env(self, role: str, topic_prefix: str = "herdwatch") -> dict[str, str]:
        """The HERDWATCH_KAFKA_* environment of one role (for subprocesses and `herdwatch kafka env`)."""
        s = self.client_settings(role, topic_prefix)
        env = {"HERDWATCH_KAFKA_BOOTSTRAP": s.bootstrap, "HERDWATCH_KAFKA_TOPIC_PREFIX": s.topic_prefix,
               "HERDWATCH_KAFKA_SECURITY_PROTOCOL": s.security_protocol}
        if s.sasl_mechanism and s.sasl_password:
            env.update({"HERDWATCH_KAFKA_SASL_MECHANISM": s.sasl_mechanism,
                        "HERDWATCH_KAFKA_SASL_USERNAME": s.sasl_username or "",
                        "HERDWATCH_KAFKA_SASL_PASSWORD": s.sasl_password.get_secret_value(),
                        "HERDWATCH_KAFKA_SSL_CAFILE": str(s.ssl_cafile)})
        return env

    def provision(self, topic_prefix: str = "herdwatch", app_id: str | None = None,
                  sink_group: str | None = None, subscriber_group_prefix: str | None = None,
                  partitions: int | None = None, osquery: bool = False) -> list[AclSpec]:
        """As admin: create the deployment's topics and grant every role its ACLs (both idempotent)."""
        from contract.kafka_admin import ensure_topics

        admin = self.client_settings("admin", topic_prefix)
        ensure_topics(admin, partitions=partitions)
        specs = role_acls(topic_prefix, app_id, sink_group, subscriber_group_prefix, osquery=osquery)
        create_acls(admin, specs)
        return specs

    def rotate(self, role: str) -> SecretStr:
        """Give `role` a new random password (on the broker, then in credentials.env); returns it."""
        from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

        if role not in ROLES:
            raise KafkaLocalError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        passwords = self.passwords()
        new = secrets.token_urlsafe(24)
        admin = AdminClient(self.client_settings("admin").confluent_config())
        upsert = UserScramCredentialUpsertion(role, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                              new.encode())
        for fut in admin.alter_user_scram_credentials([upsert]).values():
            fut.result(30)
        lines = self.credentials_file.read_text().splitlines()
        key = f"{role.upper()}_PASSWORD="
        self.credentials_file.write_text("\n".join(key + new if line.startswith(key) else line
                                                  for line in lines) + "\n")
        if role == "admin":  # the broker's inter-broker login uses it from the next start on
            props = self.root / "server.properties"
            props.write_text(props.read_text().replace(passwords["admin"].get_secret_value(), new))
        return SecretStr(new)


def with_overrides(properties: str, overrides: dict[str, str]) -> str:
    """`properties` with each key of `overrides` replaced (or appended when absent)."""
    out, seen = [], set()
    for line in properties.splitlines():
        key = line.split("=", 1)[0].strip()
        if not line.lstrip().startswith("#") and key in overrides:
            out.append(f"{key}={overrides[key]}")
            seen.add(key)
        else:
            out.append(line)
    out += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    return "\n".join(out) + "\n"


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


# --- ACLs --------------------------------------------------------------------------------------------
Operation = Literal["READ", "WRITE", "CREATE", "DESCRIBE"]


@dataclass(frozen=True)
class AclSpec:
    """ALLOW `operations` on one topic or group (literal name, or every name starting with it)."""

    role: str
    resource: Literal["topic", "group"]
    name: str
    operations: tuple[Operation, ...]
    prefixed: bool = False

    def describe(self) -> str:
        what = f"{self.resource} {self.name}{'*' if self.prefixed else ''}"
        return f"User:{self.role:<10} {', '.join(self.operations):<30} {what}"


def role_acls(topic_prefix: str = "herdwatch", app_id: str | None = None,
              sink_group: str | None = None,
              subscriber_group_prefix: str | None = None, osquery: bool = False) -> list[AclSpec]:
    """Least privilege per role. `admin` is a super user and needs none.

    `osquery`: the deployment also takes osquery result logs (docs/osquery.md): hosts' osquery (as the
    `agent` role) write the osquery topic, the worker reads it and writes what it made of it to telemetry.

    The groups default to the deployment's own (contract.topics.TopicNames: `<deployment>-streams`, `-sink`,
    `-anomalies-`), the names the worker, the sink and `herdwatch anomalies` use without settings.

    CREATE on a topic the role already uses is there because workers and sinks create missing topics at
    start (idempotently); on an existing topic it changes nothing.
    """
    from contract.topics import ALL, TopicNames

    t = TopicNames(topic_prefix)
    app_id = app_id or t.app_id
    sink_group = sink_group or t.sink_group
    subscriber_group_prefix = subscriber_group_prefix or t.subscriber_group_prefix
    every = [t.name(spec) for spec in ALL]
    specs = [AclSpec("agent", "topic", t.telemetry, ("WRITE", "DESCRIBE"))]
    # stream worker: reads telemetry (and its own repartitioned observations), writes findings
    specs.append(AclSpec("worker", "topic", t.telemetry, ("READ", "DESCRIBE", "CREATE")))
    specs.append(AclSpec("worker", "topic", t.observations, ("READ", "WRITE", "DESCRIBE", "CREATE")))
    specs += [AclSpec("worker", "topic", name, ("WRITE", "DESCRIBE", "CREATE"))
              for name in (t.anomalies, t.rollouts, t.lifecycle, t.deadletter, t.ocsf)]
    specs.append(AclSpec("worker", "topic", f"{app_id}-", ("READ", "WRITE", "DESCRIBE", "CREATE"), prefixed=True))
    specs.append(AclSpec("worker", "group", app_id, ("READ", "DESCRIBE")))
    if osquery:
        specs.append(AclSpec("agent", "topic", t.osquery, ("WRITE", "DESCRIBE")))
        specs.append(AclSpec("worker", "topic", t.osquery, ("READ", "DESCRIBE", "CREATE")))
        specs.append(AclSpec("worker", "topic", t.telemetry, ("WRITE",)))
    # sink: reads what it stores, dead-letters what it cannot store
    stored = (t.telemetry, t.anomalies, t.rollouts, t.lifecycle)
    specs += [AclSpec("sink", "topic", name, ("READ", "DESCRIBE", "CREATE")) for name in stored]
    specs += [AclSpec("sink", "topic", name, ("WRITE", "DESCRIBE", "CREATE")) for name in (t.deadletter,)]
    specs += [AclSpec("sink", "topic", name, ("CREATE",)) for name in every
              if name not in stored and name != t.deadletter]
    specs.append(AclSpec("sink", "group", sink_group, ("READ", "DESCRIBE")))
    # subscribers: findings only
    specs.append(AclSpec("subscriber", "topic", t.anomalies, ("READ", "DESCRIBE")))
    specs.append(AclSpec("subscriber", "group", subscriber_group_prefix, ("READ", "DESCRIBE"), prefixed=True))
    return specs


def create_acls(admin: KafkaSettings, specs: list[AclSpec], timeout: float = 30.0) -> None:
    """Create `specs` on the cluster `admin` reaches (as a super user). Existing ACLs are left as they are."""
    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    client = AdminClient(admin.confluent_config())
    bindings = [AclBinding(ResourceType.TOPIC if spec.resource == "topic" else ResourceType.GROUP, spec.name,
                           ResourcePatternType.PREFIXED if spec.prefixed else ResourcePatternType.LITERAL,
                           f"User:{spec.role}", "*", AclOperation[op], AclPermissionType.ALLOW)
                for spec in specs for op in spec.operations]
    for binding, fut in client.create_acls(bindings, request_timeout=timeout).items():
        try:
            fut.result(timeout)
        except Exception as e:
            raise KafkaLocalError(f"could not create ACL {binding}: {e}; is {admin.sasl_username} a super user "
                                  f"of {admin.bootstrap}?") from e
    # The controller has them; the broker applies them from the metadata log a moment later, and a client
    # refused in between sees a non-retriable authorization error. Wait until the broker shows them all.
    anything: Any = None  # a filter's None matches every name, principal and host
    everything = AclBindingFilter(ResourceType.ANY, anything, ResourcePatternType.ANY, anything, anything,
                                  AclOperation.ANY, AclPermissionType.ANY)
    wanted = set(bindings)
    deadline = time.monotonic() + timeout
    while True:
        shown = set(client.describe_acls(everything, request_timeout=timeout).result(timeout))
        if wanted <= shown:
            return
        if time.monotonic() > deadline:
            raise KafkaLocalError(f"{len(wanted - shown)} new ACLs did not show on {admin.bootstrap} within "
                                  f"{timeout:.0f}s; see the broker log")
        time.sleep(0.1)
