"""Masking secrets in command lines before they leave the host.

One `Redactor` is built from the settings (built-in rules plus `redact_patterns`) and applied by every
probe that reports a command line (process cmdlines, sshd command settings) before the event is built.
A secret is replaced by `***`; what names it stays, so `--password=***`, `-p***`, `user:***@host`.

The rules, in order:
1. well-known token formats anywhere: AWS access key ids (AKIA/ASIA...), GitHub (ghp_, gho_, ghu_,
   ghs_, ghr_, github_pat_), GitLab (glpat-), Slack (xox?-), Stripe (sk_live_...), Google (AIza...),
   npm (npm_), JWTs (eyJ...), private key blocks; the prefix is kept (`ghp_***`);
2. credentials in URLs: `scheme://user:secret@host` -> `scheme://user:***@host`;
3. `Authorization: Bearer x`, any `Name: value` header or `name:value` pair whose name is secret
   (X-Api-Key, X-Auth-Token, openssl's `pass:x`), and a bare `Bearer x`;
4. `name=value` where the name is secret: `--password=x`, `-Dkeystore.password=x`, `PGPASSWORD=x`,
   `?token=x` in a URL (up to the next `&`), `"password": "x"` in JSON;
5. a separate value after a secret-named option: `--password x`, `-pw x`, `--api-key x` (not when the
   next argument starts with `-`);
6. program-specific options, only where they unambiguously carry a password: `-pSECRET` (attached) of
   mysql, mariadb, mysqldump, mysqladmin ... (a separate `mysql -p db` is the prompt flag and a
   database name: kept); `sshpass -p x`/`-px`; `mongo`/`mongosh`/`mongodump`... `-p x`;
   `docker|podman|nerdctl|buildah|skopeo|helm|oc ... login -p x`; `redis-cli -a x`; `ldapsearch`
   (and friends) `-w x`; `smbclient -U user%x`; `curl -u user:x` / `--user` / `-U` / `--proxy-user`
   (`curl -u user` alone prompts: kept). `-p` of any other program (`ssh -p 22`, `psql -p 5432`,
   `docker run -p 8080:80`) is left alone;
7. `aws configure set <secret-name> <value>`;
8. extra regexes from the setting `redact_patterns` (group 1 masked, or the whole match).

A name is secret when, split into words (on `-`, `_`, `.` and camelCase), its last word is pass, pwd,
pw, token, key, auth, authorization, apikey, credentials, creds, passin, passout or bearer (`--api-key`,
`X-Auth-Token`, `DB_PASS`, but not `SSH_AUTH_SOCK` or `StrictHostKeyChecking`), or it contains
password, passwd, passphrase, secret, apikey, credential, privatekey, accesskey, authtoken or
accesstoken; unless it starts with `no-` or its last word says the value is not the secret itself
(`--password-file PATH`, `--password-stdin`, `--auth-type basic`, `--key-id`, `PasswordAuthentication=no`).
Everything else passes unchanged, so ordinary command lines are reported exactly as they ran.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

MASK = "***"

_SEGMENTS = frozenset({"pass", "pwd", "pw", "token", "key", "auth", "authorization", "apikey", "credentials",
                       "creds", "passin", "passout", "bearer"})
_SUBSTRINGS = ("password", "passwd", "passphrase", "secret", "apikey", "credential", "privatekey", "accesskey",
               "authtoken", "accesstoken")
_NOT_THE_VALUE = frozenset({"file", "path", "dir", "stdin", "prompt", "type", "id", "name", "method", "mode",
                            "url", "size", "length", "len", "env", "cmd", "command", "helper", "store",
                            "authentication", "authentications", "enabled", "required", "timeout", "ttl",
                            "algorithms", "types", "count", "limit", "port", "host", "user", "username"})
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SPLIT = re.compile(r"[-_.]+")


def is_secret_name(name: str) -> bool:
    """True if an option, variable or header called `name` carries a secret (see the module doc)."""
    n = name.lstrip("-")
    if name.startswith("-D") and len(name) > 2:  # java -Dsome.password=x
        n = name[2:]
    words = [w for w in _SPLIT.split(_CAMEL.sub(r"\1_\2", n).lower()) if w]
    if not words or words[0] == "no" or (len(words) > 1 and words[-1] in _NOT_THE_VALUE):
        return False
    if words[-1] in _SEGMENTS:
        return True
    joined = "".join(words)
    return any(s in joined for s in _SUBSTRINGS)


# -- rules on one argument (or one text) ---------------------------------------------------------------
_TOKENS = re.compile(
    r"\b(?P<keep>AKIA|ASIA)[A-Z0-9]{16}\b"
    r"|\b(?P<keep2>gh[pousr]_)[A-Za-z0-9]{30,}"
    r"|\b(?P<keep3>github_pat_)[A-Za-z0-9_]{20,}"
    r"|\b(?P<keep4>glpat-)[A-Za-z0-9_\-]{20,}"
    r"|\b(?P<keep5>xox[abposr]-)[A-Za-z0-9\-]{10,}"
    r"|\b(?P<keep6>[sr]k_(?:live|test)_)[A-Za-z0-9]{16,}"
    r"|\b(?P<keep7>AIza)[A-Za-z0-9_\-]{30,}"
    r"|\b(?P<keep8>npm_)[A-Za-z0-9]{30,}"
    r"|\b(?P<keep9>eyJ)[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"
)
_KEY_BLOCK = re.compile(r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----).*?(?:-----END [A-Z0-9 ]*PRIVATE KEY"
                        r"( BLOCK)?-----|\Z)", re.DOTALL)
_URL_CREDS = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)(?P<secret>[^\s/]*)@")
_HEADER = re.compile(r"(?P<name>(?<![\w\-.])[A-Za-z][\w\-]*):(?P<sp>\s*)"
                     r"(?P<scheme>(?:Bearer|Basic|Token|Digest|Negotiate|bearer|basic|token)\s+)?"
                     r"(?P<secret>[^\s\"']+)")
_BEARER = re.compile(r"(?P<pre>\b[Bb]earer\s+)(?P<secret>(?!\*\*\*)[^\s\"']+)")
_KV = re.compile(r"(?P<name>(?<![\w\-.])-{0,2}[A-Za-z_][\w.\-]*)(?P<sep>\s*=\s*)"
                 r"(?P<secret>(?!\*\*\*)(?:'[^']*'|\"[^\"]*\"|\S+))")
_KV_URL = re.compile(r"(?P<name>(?<![\w\-.])-{0,2}[A-Za-z_][\w.\-]*)(?P<sep>=)(?P<secret>[^\s&#]+)")
_WORD = re.compile(r"\S+")
_JSON = re.compile(r"(?P<name>\"[^\"]{1,64}\")(?P<sep>\s*:\s*)(?P<secret>\"(?:[^\"\\]|\\.)*\"|[^\s,}]+)")


def _token(m: re.Match[str]) -> str:
    keep = next((g for g in m.groups() if g), "")
    return keep + MASK


def _named(m: re.Match[str]) -> str:
    """name + separator + *** when the name is secret, else the match unchanged."""
    name = m.group("name").strip("\"")
    head = m.group(0)[: m.start("secret") - m.start(0)]
    if not is_secret_name(name):  # the value may hold a pair of its own: --from-literal=password=x
        return head + m.re.sub(_named, m.group("secret"))
    return head + MASK


def _header(m: re.Match[str]) -> str:
    if not is_secret_name(m.group("name")):
        return m.group(0)
    return m.group(0)[: m.start("secret") - m.start(0)] + MASK


# -- programs whose short options carry passwords ------------------------------------------------------
_MYSQL = frozenset({"mysql", "mariadb", "mysqldump", "mariadb-dump", "mysqladmin", "mariadb-admin", "mysqlimport",
                    "mysqlshow", "mysqlcheck", "mysqlpump", "mysqlsh", "mysqlbinlog"})
_MONGO = frozenset({"mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport", "mongostat",
                    "mongotop", "mongofiles"})
_LDAP = frozenset({"ldapsearch", "ldapadd", "ldapmodify", "ldapdelete", "ldappasswd", "ldapwhoami", "ldapcompare",
                   "ldapmodrdn", "ldapexop"})
_LOGIN_HOSTS = frozenset({"docker", "podman", "nerdctl", "buildah", "skopeo", "helm", "oc", "crane", "regctl"})
SEPARATE: dict[str, frozenset[str]] = {
    "sshpass": frozenset({"-p"}), "redis-cli": frozenset({"-a"}), "login": frozenset({"-p"}),
    **{p: frozenset({"-p"}) for p in _MONGO}, **{p: frozenset({"-w"}) for p in _LDAP},
}
"""program -> short options whose next argument is a password."""
ATTACHED: dict[str, str] = {"sshpass": "-p", **{p: "-p" for p in _MYSQL}, **{p: "-w" for p in _LDAP}}
"""program -> short option whose attached rest (-pSECRET) is a password."""
USERPASS: dict[str, frozenset[str]] = {
    "curl": frozenset({"-u", "--user", "-U", "--proxy-user"}),
    "smbclient": frozenset({"-U", "--user"}), "rpcclient": frozenset({"-U", "--user"}),
}
"""program -> options taking user:password (curl) or user%password (smbclient)."""
_WRAPPERS = frozenset({"sshpass"})
"""Programs whose first positional argument is the command they run: their options end there."""
PROGRAMS = frozenset({*SEPARATE, *ATTACHED, *USERPASS, *_LOGIN_HOSTS, "aws"}) - {"login"}


def _mask_userpass(value: str) -> str:
    for sep in (":", "%"):
        user, found, secret = value.partition(sep)
        if found and secret:
            return f"{user}{sep}{MASK}"
    return value


class Redactor:
    """Masks secrets in argv lists and command-line texts (see the module doc for the rules)."""

    def __init__(self, extra_patterns: Sequence[str] = ()) -> None:
        self.extra = [re.compile(p) for p in extra_patterns]

    # one argument, or a whole text: the rules that need no program context
    def element(self, text: str) -> str:
        if not text:
            return text
        text = _KEY_BLOCK.sub(lambda m: m.group(1) + MASK, text)
        text = _TOKENS.sub(_token, text)
        text = _URL_CREDS.sub(lambda m: m.group("pre") + MASK + "@", text)
        text = _HEADER.sub(_header, text)
        text = _BEARER.sub(lambda m: m.group("pre") + MASK, text)
        text = _JSON.sub(_named, text)
        text = _WORD.sub(lambda w: _KV_URL.sub(_named, w.group()) if "://" in w.group() else w.group(), text)
        text = _KV.sub(_named, text)  # after the URLs, whose masked values (***) it leaves alone
        for pattern in self.extra:
            text = pattern.sub(self._extra_mask, text)
        return text

    @staticmethod
    def _extra_mask(m: re.Match[str]) -> str:
        if m.re.groups and m.group(1) is not None:
            return m.group(0)[: m.start(1) - m.start(0)] + MASK + m.group(0)[m.end(1) - m.start(0):]
        return MASK

    def argv(self, args: Sequence[str]) -> list[str]:
        """The argument vector with secrets masked; an argument holding a whole command (sh -c "...")
        is redacted as a command line of its own."""
        out = [self.text(a) if any(c.isspace() for c in a) else self.element(a) for a in args]
        return self._walk(list(args), out)

    def text(self, line: str) -> str:
        """A command line as one string (words split on whitespace, which is kept as it was)."""
        masked = self.element(line)
        parts = re.split(r"(\s+)", masked)
        words = parts[0::2]
        walked = self._walk(words, list(words))
        parts[0::2] = walked
        return "".join(parts)

    @staticmethod
    def _walk(original: list[str], out: list[str]) -> list[str]:
        """Rules that depend on the option before (5, 6, 7): `original` decides, `out` is masked."""
        program = ""
        pending = ""  # "plain": mask the next argument; "userpass": mask after user: / user%
        words: list[str] = []  # the positional words since the program (aws configure set NAME VALUE)
        for i, arg in enumerate(original):
            if pending:
                if arg and not arg.startswith("-"):
                    out[i] = _mask_userpass(out[i]) if pending == "userpass" else MASK
                pending = ""
                continue
            if not arg:
                continue
            if not arg.startswith("-"):
                base = os.path.basename(arg.strip("\"'"))
                if program in _WRAPPERS:
                    program = ""
                if base in PROGRAMS:
                    program, words = base, []
                    continue
                if base == "login" and program in _LOGIN_HOSTS:
                    program = "login"
                elif program == "aws" and words[-2:] == ["configure", "set"] and is_secret_name(base):
                    pending = "plain"
                words.append(base)
                continue
            name, eq, value = arg.partition("=")
            if program in USERPASS and name in USERPASS[program]:
                if eq:
                    out[i] = f"{name}={_mask_userpass(value)}"
                else:
                    pending = "userpass"
                continue
            if program in USERPASS and not eq and len(arg) > 2 and arg[:2] in USERPASS[program] \
                    and not arg.startswith("--"):
                out[i] = arg[:2] + _mask_userpass(arg[2:])
                continue
            if program in SEPARATE and arg in SEPARATE[program]:
                pending = "plain"
                continue
            attached = ATTACHED.get(program)
            if attached and arg.startswith(attached) and len(arg) > 2 and not arg.startswith("--"):
                out[i] = attached + MASK
                continue
            if not eq and len(name.lstrip("-")) > 1 and is_secret_name(name):
                pending = "plain"
        return out
