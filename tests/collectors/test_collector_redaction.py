"""Secrets in command lines are masked before they leave the host: a table of real-world command lines
with their expected masked form, generated secrets that must never come out, generated ordinary command
lines that must come out unchanged, and the process probe applying it to a real process."""

from __future__ import annotations

import shlex
import string
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from collectors.probes import ProcessProbe
from collectors.probes.config import parse_sshd
from collectors.redact import PROGRAMS, Redactor, is_secret_name
from collectors.settings import CollectorSettings

R = Redactor()
PROGRAMS_WITH_SECRETS = PROGRAMS | {"login"}

# (command line as typed, expected command line as reported); argv = shlex.split(command line)
TABLE = [
    ("mysql -u root -pS3cr3t! shop", "mysql -u root -p*** shop"),
    ("mysql -u root -p shop", "mysql -u root -p shop"),  # -p alone prompts; shop is the database
    ("mysqldump --user=backup --password=hunter2 --all-databases",
     "mysqldump --user=backup --password=*** --all-databases"),
    ("/usr/bin/mariadb -h db1 -P 3306 -uapp -pW3lc0me db", "/usr/bin/mariadb -h db1 -P 3306 -uapp -p*** db"),
    ("mysqladmin -u root --password hunter2 status", "mysqladmin -u root --password *** status"),
    ("env PGPASSWORD=pgSecret psql -h db -p 5432 -U app", "env PGPASSWORD=*** psql -h db -p 5432 -U app"),
    ("psql postgresql://app:pgS3cret@db.internal:5432/shop", "psql postgresql://app:***@db.internal:5432/shop"),
    ("psql 'host=db user=app password=pw123 dbname=shop'", "psql host=db user=app password=*** dbname=shop"),
    ("curl -u admin:adminpass https://api.example.com/v1", "curl -u admin:*** https://api.example.com/v1"),
    ("curl -uadmin:adminpass https://x.example.com", "curl -uadmin:*** https://x.example.com"),
    ("curl --user admin https://x.example.com", "curl --user admin https://x.example.com"),  # prompts
    ("curl -s -H 'Authorization: Bearer abcdef123456' https://api.example.com",
     "curl -s -H Authorization: Bearer *** https://api.example.com"),
    ("curl -H 'X-Api-Key: k3yv4lu3' https://api.example.com", "curl -H X-Api-Key: *** https://api.example.com"),
    ("curl -d '{\"username\":\"bob\",\"password\":\"hunter2\"}' https://x.example.com/login",
     "curl -d {\"username\":\"bob\",\"password\":***} https://x.example.com/login"),
    ("curl 'https://api.example.com/v1?api_key=abc123&page=2'", "curl https://api.example.com/v1?api_key=***&page=2"),
    ("wget --user=bob --password=wgetpass https://files.example.com/a.tgz",
     "wget --user=bob --password=*** https://files.example.com/a.tgz"),
    ("wget --header='Authorization: Basic Ym9iOnB3' https://x.example.com",
     "wget --header=Authorization: Basic *** https://x.example.com"),
    ("docker login -u bob -p dockerpass registry.example.com", "docker login -u bob -p *** registry.example.com"),
    ("docker login --username bob --password-stdin registry.example.com",
     "docker login --username bob --password-stdin registry.example.com"),
    ("docker run -d -p 8080:80 -e MYSQL_ROOT_PASSWORD=rootpw mysql:8",
     "docker run -d -p 8080:80 -e MYSQL_ROOT_PASSWORD=*** mysql:8"),
    ("aws configure set aws_secret_access_key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "aws configure set aws_secret_access_key ***"),
    ("aws s3 ls --profile prod --region eu-west-1", "aws s3 ls --profile prod --region eu-west-1"),
    ("env AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI aws s3 ls",
     "env AWS_ACCESS_KEY_ID=AKIA*** AWS_SECRET_ACCESS_KEY=*** aws s3 ls"),
    ("redis-cli -h cache -p 6379 -a r3dispass ping", "redis-cli -h cache -p 6379 -a *** ping"),
    ("sshpass -p sshpw123 ssh -p 2222 deploy@web1", "sshpass -p *** ssh -p 2222 deploy@web1"),
    ("sshpass -psshpw123 scp a.txt deploy@web1:/tmp", "sshpass -p*** scp a.txt deploy@web1:/tmp"),
    ("git clone https://bob:ghtoken123@github.com/acme/app.git", "git clone https://bob:***@github.com/acme/app.git"),
    ("git clone https://x-access-token:ghs_16C7e42F292c6912E7710c838347Ae178B4a@github.com/acme/app.git",
     "git clone https://x-access-token:***@github.com/acme/app.git"),
    ("git -c http.extraHeader='Authorization: Basic dXNlcjpwYXNz' fetch",
     "git -c http.extraHeader=Authorization: Basic *** fetch"),
    ("java -Dpassword=javapw -Djavax.net.ssl.keyStorePassword=ks123 -jar app.jar --server.port=8080",
     "java -Dpassword=*** -Djavax.net.ssl.keyStorePassword=*** -jar app.jar --server.port=8080"),
    ("java -jar app.jar --spring.datasource.password=dbpw --spring.datasource.username=app",
     "java -jar app.jar --spring.datasource.password=*** --spring.datasource.username=app"),
    ("mongosh -u admin -p mongopw --authenticationDatabase admin",
     "mongosh -u admin -p *** --authenticationDatabase admin"),
    ("mongodump --uri mongodb://admin:m0ngo@db:27017/shop", "mongodump --uri mongodb://admin:***@db:27017/shop"),
    ("ldapsearch -x -D cn=admin,dc=example,dc=com -w ldappw -b dc=example,dc=com",
     "ldapsearch -x -D cn=admin,dc=example,dc=com -w *** -b dc=example,dc=com"),
    ("openssl pkcs12 -export -in c.pem -passout pass:p12pw -out c.p12",
     "openssl pkcs12 -export -in c.pem -passout *** -out c.p12"),
    ("vault login -method=userpass username=bob password=vaultpw",
     "vault login -method=userpass username=bob password=***"),
    ("git push https://ghp_1234567890abcdefghijABCDEFGHIJ123456@github.com/acme/app.git main",
     "git push https://ghp_***@github.com/acme/app.git main"),
    ("./deploy.sh --api-token xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
     "./deploy.sh --api-token ***"),
    ("node notify.js xoxp-1234567890-abcdefghij", "node notify.js xoxp-***"),
    ("python3 app.py --jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX3Zh",
     "python3 app.py --jwt eyJ***"),
    ("smbclient //fs/share -U bob%smbpw", "smbclient //fs/share -U bob%***"),
    ("sh -c 'mysql -uroot -pInline! -e \"select 1\"'", "sh -c mysql -uroot -p*** -e \"select 1\""),
    ("sudo -u postgres psql -p 5433", "sudo -u postgres psql -p 5433"),
    ("ssh -p 22 -o StrictHostKeyChecking=no -o PasswordAuthentication=no deploy@web1",
     "ssh -p 22 -o StrictHostKeyChecking=no -o PasswordAuthentication=no deploy@web1"),
    ("nc -l -p 9000", "nc -l -p 9000"),
    ("python3 -m http.server 8000 --bind 127.0.0.1", "python3 -m http.server 8000 --bind 127.0.0.1"),
    ("kubectl create secret generic db --from-literal=password=k8spw",
     "kubectl create secret generic db --from-literal=password=***"),
    ("helm registry login registry.example.com -u bob -p helmpw",
     "helm registry login registry.example.com -u bob -p ***"),
    ("agent --token=tok123 --key=k3y --auth=user:pw --client-secret s3cr3t",
     "agent --token=*** --key=*** --auth=*** --client-secret ***"),
    ("app --password-file /run/secrets/db --auth-type basic --max-tokens 100 --no-password",
     "app --password-file /run/secrets/db --auth-type basic --max-tokens 100 --no-password"),
]


@pytest.mark.parametrize(("line", "expected"), TABLE, ids=[t[0][:40] for t in TABLE])
def test_real_world_command_lines(line: str, expected: str) -> None:
    assert " ".join(R.argv(shlex.split(line))) == expected


def test_the_table_is_large_enough() -> None:
    assert len(TABLE) >= 30


def test_a_private_key_block_and_a_text_command_line() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n-----END OPENSSH PRIVATE KEY-----"
    assert R.argv(["deploy", "--ssh-key-data", key]) == ["deploy", "--ssh-key-data",
                                                        "-----BEGIN OPENSSH PRIVATE KEY-----***"]
    assert R.argv(["echo", key]) == ["echo", "-----BEGIN OPENSSH PRIVATE KEY-----***"]
    assert R.text("* * * * * root  mysqldump -uroot -pCr0nPw db > /tmp/x") == \
        "* * * * * root  mysqldump -uroot -p*** db > /tmp/x"


def test_extra_patterns_from_the_settings() -> None:
    s = CollectorSettings(redact_patterns=[r"--vendor-code[= ](\S+)", r"ACME-[0-9]{6}"])
    r = Redactor(s.redact_patterns)
    assert r.text("tool --vendor-code=abc ACME-123456 ok") == "tool --vendor-code=*** *** ok"
    with pytest.raises(ValueError, match="redact_patterns"):
        CollectorSettings(redact_patterns=["(unclosed"])


def test_secret_names() -> None:
    for name in ("--password", "PGPASSWORD", "-Dkeystore.password", "DB_PASS", "MYSQL_PWD", "X-Auth-Token",
                 "--api-key", "apiKey", "client_secret", "AWS_SECRET_ACCESS_KEY", "-pw", "Authorization"):
        assert is_secret_name(name), name
    for name in ("--port", "--user", "SSH_AUTH_SOCK", "StrictHostKeyChecking", "--password-file", "--no-password",
                 "--auth-type", "--keyboard", "--max-tokens", "--pass-through", "PasswordAuthentication"):
        assert not is_secret_name(name), name


def test_sshd_command_settings_are_redacted() -> None:
    text = "AuthorizedKeysCommand /usr/bin/keys --token=sshdTok3n %u\nPermitRootLogin no\n"
    got = parse_sshd(text, lambda _: [], R)
    assert got == {"sshd.authorizedkeyscommand": "/usr/bin/keys --token=*** %u", "sshd.permitrootlogin": "no"}


def test_the_process_probe_reports_a_real_process_redacted() -> None:
    probe = ProcessProbe(redactor=R)
    probe.collect(full=False)
    secret = "pr0cS3cret" + str(time.monotonic_ns())
    code = "import time; time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code, "--password", secret, f"PGPASSWORD={secret}"])
    try:
        deadline = time.monotonic() + 10
        started: list[dict] = []
        while not started and time.monotonic() < deadline:
            started = [p for k, p in probe.collect(full=False) if p.get("pid") == child.pid]
            time.sleep(0.05)
        assert started, "the child was not seen"
        assert secret not in str(started)
        assert started[0]["cmdline"].endswith("--password *** PGPASSWORD=***")
    finally:
        child.kill()
        child.wait()


# -- generated inputs --------------------------------------------------------------------------------
# Secrets: printable, no whitespace or quotes; not starting with "-" (an argument starting with "-" is
# taken for the next option, see collectors/redact.py). URL secrets are percent-encoded in real URLs, so
# they hold no "/", "@", "?", "#" or "&" there.
SECRET_CHARS = string.ascii_letters + string.digits + "!#$%()*+,.:;<>?@[]^_{|}~/=&-"
URL_SECRET_CHARS = string.ascii_letters + string.digits + "!$()*+,.;=_~-%"
secrets = st.text(SECRET_CHARS, min_size=6, max_size=40).filter(lambda s: not s.startswith("-"))
url_secrets = st.text(URL_SECRET_CHARS, min_size=6, max_size=40).filter(lambda s: not s.startswith("-"))

TEMPLATES = [
    "mysql -u root -p{s} db",
    "mysqldump --password={s} --all-databases",
    "mysql --password {s} db",
    "env PGPASSWORD={s} psql -h db -p 5432",
    "curl -u bob:{s} https://api.example.com",
    "curl --user=bob:{s} https://api.example.com",
    "curl -H 'Authorization: Bearer {s}' https://api.example.com",
    "curl -H 'X-Api-Key: {s}' https://api.example.com",
    "wget --password={s} https://files.example.com/a",
    "docker login -u bob -p {s} registry.example.com",
    "docker run -e DB_PASSWORD={s} app",
    "redis-cli -h cache -a {s} ping",
    "sshpass -p {s} ssh deploy@web1",
    "sshpass -p{s} ssh deploy@web1",
    "java -Dpassword={s} -jar app.jar",
    "java -Djavax.net.ssl.trustStorePassword={s} -jar app.jar",
    "aws configure set aws_secret_access_key {s}",
    "mongosh -u admin -p {s}",
    "ldapsearch -x -w {s} -b dc=x",
    "app --token {s}",
    "app --api-key={s}",
    "app --client-secret {s}",
    "sh -c 'mysql -uroot -p{s} db'",
    "smbclient //fs/share -U bob%{s}",
]
URL_TEMPLATES = [
    "git clone https://bob:{s}@github.com/acme/app.git",
    "psql postgresql://app:{s}@db:5432/shop",
    "curl https://api.example.com/v1?token={s}&page=2",
    "redis-cli -u redis://:{s}@cache:6379",
]
TOKEN_FORMATS = st.one_of(
    st.from_regex(r"\AAKIA[A-Z0-9]{16}\Z"),
    st.from_regex(r"\Aghp_[A-Za-z0-9]{36}\Z"),
    st.from_regex(r"\Agithub_pat_[A-Za-z0-9_]{40,60}\Z"),
    st.from_regex(r"\Axox[bp]-[0-9]{10,12}-[A-Za-z0-9]{10,24}\Z"),
    st.from_regex(r"\AeyJ[A-Za-z0-9_-]{10,30}\.eyJ[A-Za-z0-9_-]{10,40}\.[A-Za-z0-9_-]{10,43}\Z"),
)


def leaked(line: str, secret: str) -> bool:
    return secret in " ".join(R.argv(shlex.split(line))) or secret in R.text(line)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.filter_too_much])
@given(template=st.sampled_from(TEMPLATES), secret=secrets)
def test_generated_secrets_never_come_out(template: str, secret: str) -> None:
    assume(secret not in template.replace("{s}", ""))
    assert not leaked(template.replace("{s}", secret), secret)


@settings(max_examples=600)
@given(template=st.sampled_from(URL_TEMPLATES), secret=url_secrets)
def test_generated_url_secrets_never_come_out(template: str, secret: str) -> None:
    assume(secret not in template.replace("{s}", ""))
    assert not leaked(template.replace("{s}", secret), secret)


@settings(max_examples=600)
@given(token=TOKEN_FORMATS, before=st.sampled_from(["deploy", "app --id", "echo", "run --opt=x"]))
def test_generated_well_known_tokens_never_come_out(token: str, before: str) -> None:
    body = token.split("_", 1)[-1] if token.startswith(("ghp_", "github_pat_")) else token[4:]
    line = f"{before} {token}"
    assert body not in " ".join(R.argv(shlex.split(line))) and body not in R.text(line)


# Ordinary command lines: programs, options and values with nothing secret in them (including -p as a
# port for programs where -p is not a password).
PROGRAMS = ["ls", "grep", "python3", "/usr/sbin/nginx", "ssh", "psql", "nc", "node", "java", "kubectl",
            "docker", "curl", "rsync", "tar", "systemctl", "/usr/bin/env", "redis-server", "mysql"]
words = st.from_regex(r"\A[a-z][a-z0-9]{0,11}\Z").filter(lambda w: w not in PROGRAMS_WITH_SECRETS)
numbers = st.integers(0, 65535).map(str)
paths = st.lists(words, min_size=1, max_size=4).map(lambda p: "/" + "/".join(p))
hosts = st.tuples(words, st.sampled_from(["example.com", "internal", "local"])).map(".".join)
plain_values = st.one_of(words, numbers, paths, hosts, hosts.map(lambda h: f"https://{h}/index.html"),
                         st.tuples(hosts, numbers).map(":".join), st.tuples(words, hosts).map("@".join))
OPTIONS = ["-p", "-v", "-n", "-c", "-o", "--port", "--name", "--username", "--host", "--output", "--config",
           "--timeout", "--verbose", "--region", "-P", "-h", "--bind", "--log-level", "--workers"]
# not generated: -u/--user (curl's user:password) and words that name a program with password options
args = st.one_of(
    plain_values,
    st.tuples(st.sampled_from(OPTIONS), plain_values).map(lambda t: f"{t[0]} {t[1]}"),
    st.tuples(st.sampled_from([o for o in OPTIONS if o.startswith("--")]), plain_values).map("=".join),
    st.tuples(st.sampled_from(["LANG", "HOME", "PATH", "TZ", "PORT", "NODE_ENV"]), plain_values).map("=".join),
)
harmless = st.tuples(st.sampled_from(PROGRAMS), st.lists(args, max_size=8)).map(
    lambda t: " ".join([t[0], *t[1]]))


@settings(max_examples=2000)
@given(line=harmless)
def test_generated_ordinary_command_lines_are_unchanged(line: str) -> None:
    assert R.text(line) == line
    assert " ".join(R.argv(line.split(" "))) == line
