"""Forensic SQL is read-only by construction, checked against the real engine (chDB) with generated inputs.

Attack texts combine a dangerous statement (DROP, CREATE, INSERT, ALTER, SYSTEM, SET, file(), url(),
executable(), INTO OUTFILE, SETTINGS readonly = 0) with separators and obfuscations (`;`, `#`/`--`/`/* */`
comments, `$$...$$` and quoted strings, case, whitespace, unicode, parentheses, subqueries, WITH, UNION).
Every one must be refused with UnsafeQuery, and afterwards nothing may have changed: the canary table and
the schema are intact, no file was written, the session is still writable, no secret came back.
Legitimate queries over the schema's tables, generated the same way, must run.
"""

from __future__ import annotations

import os
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.settings import StorageSettings
from herdwatch.cli import main
from storage.client import connect, make_private_dir
from storage.query_client import DirectQueryClient
from storage.readonly import UnsafeQuery
from storage.schema import migrate

pytestmark = pytest.mark.integration

ATTACK_EXAMPLES = 1000
LEGIT_EXAMPLES = 300
SECRET = f"herdwatch-secret-{uuid.uuid4().hex}"


def _shadow_head() -> str | None:
    try:
        first = Path("/etc/shadow").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return first.split(":", 2)[0] + ":" + first.split(":", 2)[1] if ":" in first else None


@dataclass
class Store:
    client: Any
    queries: DirectQueryClient
    out: Path
    secret: Path
    tables: set[str]

    def assert_unchanged(self, text: str) -> None:
        c = self.client
        assert c.query("SELECT count() FROM canary").result_rows[0][0] == 1, text
        assert self._tables() == self.tables, text
        assert list(self.out.iterdir()) == [], f"{text!r} wrote {list(self.out.iterdir())}"
        assert c.query("SELECT getSetting('readonly')").result_rows[0][0] == 0, text

    def _tables(self) -> set[str]:
        rows = self.client.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows
        return {r[0] for r in rows}

    def assert_refused(self, text: str) -> UnsafeQuery:
        try:
            result = self.queries.query(text)
        except UnsafeQuery as e:
            self.assert_unchanged(text)
            assert str(e).strip(), text
            return e
        leaked = SECRET in repr(result.rows) or bool(SHADOW and SHADOW in repr(result.rows))
        raise AssertionError(f"not refused: {text!r} (secret returned: {leaked}) -> {result.rows[:3]}")


SHADOW = _shadow_head()


@pytest.fixture
def store(storage_settings: StorageSettings, tmp_path: Path) -> Store:
    client = connect(storage_settings)
    migrate(client)
    client.command("CREATE TABLE canary (a UInt8) ENGINE = MergeTree ORDER BY a")
    client.command("INSERT INTO canary VALUES (1)")
    out = tmp_path / "out"
    out.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    s = Store(client, DirectQueryClient(client), out, secret, set())
    s.tables = s._tables()
    assert {"events", "processes", "canary", "host_lifecycle"} <= s.tables
    return s


# ---- generated attacks ------------------------------------------------------------------------------

def _dangerous(out: Path, secret: Path) -> list[str]:
    """Statements that change the store, write files or read outside it, if they ran."""
    o = str(out)
    return [
        "DROP TABLE canary",
        "DROP TABLE IF EXISTS canary SYNC",
        "TRUNCATE TABLE canary",
        "RENAME TABLE canary TO canary_gone",
        "DETACH TABLE canary",
        "CREATE TABLE made_by_attacker (a UInt8) ENGINE = Memory",
        "CREATE VIEW made_by_attacker AS SELECT 1",
        "INSERT INTO canary VALUES (9)",
        "INSERT INTO canary SELECT number FROM numbers(3)",
        "ALTER TABLE canary DELETE WHERE 1",
        "ALTER TABLE canary ADD COLUMN b UInt8",
        "DELETE FROM canary WHERE 1",
        "OPTIMIZE TABLE canary FINAL",
        "SYSTEM DROP MARK CACHE",
        "SYSTEM STOP MERGES",
        "SET readonly = 0",
        "SET allow_ddl = 1",
        f"INSERT INTO FUNCTION file('{o}/written.csv', 'CSV', 'a UInt8') SELECT 1",
        f"SELECT * FROM file('{secret}', 'LineAsString')",
        "SELECT * FROM file('/etc/shadow', 'LineAsString')",
        f"SELECT file('{secret}')",
        "SELECT file('/etc/shadow')",
        f"SELECT 1 INTO OUTFILE '{o}/outfile.txt'",
        f"SELECT * FROM canary INTO OUTFILE '{o}/outfile.csv' FORMAT CSV",
        f"EXPLAIN SELECT 1 INTO OUTFILE '{o}/explain.txt'",
        f"SHOW TABLES INTO OUTFILE '{o}/show.txt'",
        f"DESCRIBE TABLE canary INTO OUTFILE '{o}/describe.txt'",
        "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
        "SELECT * FROM executable('id', 'TSV', 'a String')",
        f"SELECT * FROM executable('touch {o}/exec', 'TSV', 'a String')",
        "SELECT * FROM remote('127.0.0.1:9', system.one)",
        "SELECT * FROM s3('http://127.0.0.1:9/b/k.csv', 'CSV', 'a String')",
        "SELECT * FROM python('x')",
        "SELECT * FROM mysql('127.0.0.1:9', 'd', 't', 'u', 'p')",
        "SELECT * FROM postgresql('127.0.0.1:9', 'd', 't', 'u', 'p')",
        "SELECT * FROM sqlite('/etc/shadow', 't')",
        "SELECT * FROM input('a String')",
        f"DESCRIBE TABLE file('{secret}', 'LineAsString')",
        "SELECT * FROM canary SETTINGS readonly = 0",
        "SELECT * FROM canary SETTINGS allow_ddl = 1, readonly = 2",
    ]


def _read_dangerous(out: Path, secret: Path) -> list[str]:
    """The single read statements among them (those that can sit inside a subquery, WITH or UNION)."""
    return [f"SELECT * FROM file('{secret}', 'LineAsString')", "SELECT * FROM file('/etc/shadow', 'LineAsString')",
            f"SELECT file('{secret}') AS line", "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
            "SELECT * FROM executable('id', 'TSV', 'a String')", "SELECT * FROM remote('127.0.0.1:9', system.one)",
            f"SELECT * FROM view(SELECT * FROM file('{secret}', 'LineAsString'))"]


HARMLESS = ["SELECT 1", "SELECT count() FROM canary", "SELECT 'a;b'", "SELECT $$x;y$$", "SELECT 'it''s; fine'",
            "SELECT `a;b` FROM (SELECT 1 AS `a;b`)", "SELECT \"col\" FROM (SELECT 1 AS col)", "SHOW TABLES",
            "SELECT 'ünïcødé ;'", "SELECT 1 -- note ;", "SELECT 1 /* ; */"]
SEPARATORS = [";", " ; ", ";\n", ";\t", "\n;\n", "; -- c\n", ";/* ; */", "/* x */;", "# c\n;", "-- c\n;",
              ";#;\n", "; /* ünïcødé */ ", ";;", ";\r\n"]


def _case(rnd: st.DataObject, text: str) -> str:
    """Random letter case outside quoted parts (keywords are case-insensitive; quoted parts stay as they are)."""
    flips = rnd.draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    out, quote = [], ""
    for ch, flip in zip(text, flips, strict=True):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'`\"":
            quote = ch
        out.append(ch.swapcase() if flip and not quote and ch.isalpha() else ch)
    return "".join(out)


def _space(rnd: st.DataObject, text: str) -> str:
    """Replace single spaces outside quotes with other whitespace or comments."""
    fills = [" ", "  ", "\t", "\n", " /**/ ", " /* ünï ; */ ", " -- c ;\n", " # c ;\n", "\n\n"]
    out, quote = [], ""
    for i, ch in enumerate(text):
        if quote or (i > 0 and text[i - 1] == "#"):  # a '#' comment needs the space after it
            out.append(ch)
            if quote:
                quote = "" if ch == quote else quote
        elif ch in "'`\"":
            quote = ch
            out.append(ch)
        elif ch == " ":
            out.append(rnd.draw(st.sampled_from(fills)))
        else:
            out.append(ch)
    return "".join(out)


def _attack(rnd: st.DataObject, out: Path, secret: Path) -> str:
    shape = rnd.draw(st.sampled_from(["after", "alone", "before", "subquery", "with", "union", "in", "paren",
                                      "explain", "settings", "breakout"]))
    bad = rnd.draw(st.sampled_from(_dangerous(out, secret)))
    read_bad = rnd.draw(st.sampled_from(_read_dangerous(out, secret)))
    ok = rnd.draw(st.sampled_from(HARMLESS))
    sep = rnd.draw(st.sampled_from(SEPARATORS))
    if shape == "after":
        text = ok + ("\n" if ok.endswith(";") or "--" in ok else "") + sep + bad
    elif shape == "alone":
        text = bad
    elif shape == "breakout":
        text = rnd.draw(st.sampled_from(BREAKOUTS)).format(bad=bad)
    elif shape == "before":
        text = bad + sep + ok
    elif shape == "subquery":
        text = f"SELECT * FROM ({read_bad}) AS t"
    elif shape == "with":
        text = f"WITH x AS ({read_bad}) SELECT * FROM x"
    elif shape == "union":
        text = f"SELECT toString(1) AS line UNION ALL {read_bad}"
    elif shape == "in":
        text = f"SELECT count() FROM canary WHERE toString(a) IN ({read_bad})"
    elif shape == "paren":
        text = f"(({read_bad}))"
    elif shape == "explain":
        text = rnd.draw(st.sampled_from([f"EXPLAIN {read_bad}", f"EXPLAIN PIPELINE {read_bad}",
                                         f"DESCRIBE ({read_bad})", f"EXPLAIN AST {bad}"]))
    else:
        text = rnd.draw(st.sampled_from(["SELECT 1", "SELECT * FROM canary"])) + rnd.draw(st.sampled_from(
            [" SETTINGS readonly = 0", " SETTINGS readonly = 2", " SETTINGS max_execution_time = 0",
             " SETTINGS allow_ddl = 1", " SETTINGS max_threads = 1, readonly = 0"]))
    if rnd.draw(st.booleans()):
        text = _case(rnd, text)
    if rnd.draw(st.booleans()):
        text = _space(rnd, text)
    return rnd.draw(st.sampled_from(["", " ", "\n", "/* lead */ ", "-- lead\n", "# lead\n"])) + text + \
        rnd.draw(st.sampled_from(["", ";", " ;", "\n", " -- tail", " # tail", "/* tail */"]))


@settings(max_examples=ATTACK_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rnd=st.data())
def test_generated_attacks_are_refused_and_change_nothing(store: Store, rnd: st.DataObject) -> None:
    store.assert_refused(_attack(rnd, store.out, store.secret))


# ---- generated legitimate queries --------------------------------------------------------------------

KEYWORDS = re.compile(r"\b(SELECT|FROM|WHERE|WITH|AS|UNION|ALL|LIMIT|NOT|IN|DESCRIBE|DESC|TABLE|SHOW|TABLES|COLUMNS|"
                      r"CREATE|EXISTS|EXPLAIN|SYNTAX|count)\b")


def _case_keywords(rnd: st.DataObject, text: str) -> str:
    """Random letter case of keywords and function names only (table names are case-sensitive)."""
    flips = iter(rnd.draw(st.lists(st.booleans(), min_size=64, max_size=64)) * 8)
    return KEYWORDS.sub(lambda m: "".join(c.swapcase() if next(flips) else c for c in m.group(0)), text)


LEGIT_TABLES = ["events", "processes", "network", "logins", "metrics", "config", "hosts", "anomalies", "rollouts",
                "process_exe_hosts", "network_remote_hosts", "host_lifecycle", "canary"]


def _legit(rnd: st.DataObject) -> str:
    t = rnd.draw(st.sampled_from(LEGIT_TABLES))
    n = rnd.draw(st.integers(0, 50))
    text = rnd.draw(st.sampled_from([
        f"SELECT count() FROM {t}",
        f"SELECT * FROM {t} LIMIT {n}",
        f"WITH (SELECT count() FROM {t}) AS n SELECT n, 'a;b' AS s, $$c;d$$ AS h",
        f"SELECT count() AS n FROM {t} UNION ALL SELECT toUInt64({n})",
        f"SELECT * FROM (SELECT count() AS n FROM {t}) WHERE n >= 0",
        f"SELECT number FROM numbers({n}) WHERE number NOT IN (SELECT count() FROM {t})",
        f"DESCRIBE TABLE {t}",
        f"DESC {t}",
        "SHOW TABLES",
        f"SHOW COLUMNS FROM {t}",
        f"SHOW CREATE TABLE {t}",
        f"EXISTS TABLE {t}",
        f"EXPLAIN SELECT count() FROM {t}",
        f"EXPLAIN SYNTAX SELECT * FROM {t} LIMIT {n + 1}",
        "SELECT * FROM state_processes(host = 'i-0', at = '2026-03-01 00:00:00')",
        f"SELECT * FROM {t} AS x LIMIT 1",
        f"SELECT count() FROM {t} WHERE 'ünïcødé ;' != ''",
        f"SELECT 1 AS a, 2 AS b FROM {t} LIMIT 0",
    ]))
    if rnd.draw(st.booleans()):
        text = _case_keywords(rnd, text)
    if rnd.draw(st.booleans()):
        text = _space(rnd, text)
    # comments and a trailing ';' around the statement (a ';' inside a comment is part of the comment)
    return rnd.draw(st.sampled_from(["", "# a note; with a semicolon\n", "-- x ; y\n", "/* ; */ ", "\n"])) + text + \
        rnd.draw(st.sampled_from(["", ";", " ; ", ";\n", " -- the last ; one\n", " # end ;", " /* ; */"]))


@settings(max_examples=LEGIT_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rnd=st.data())
def test_generated_legitimate_queries_run(store: Store, rnd: st.DataObject) -> None:
    text = _legit(rnd)
    result = store.queries.query(text)  # raises if refused or if the engine fails
    assert len(result.columns) == len(result.types), text  # no columns at all when no rows (chDB)
    store.assert_unchanged(text)


# ---- the bypasses that were reproduced, one by one ---------------------------------------------------

# The old check scanned the text for ';' outside quotes and comments, then ran
# `SELECT * FROM (\n<text>\n) SETTINGS readonly = 1`. It knew neither '#' comments nor $$ strings, so a quote
# inside either hid a ';' from it, and the engine ran every statement, readonly only on the last.
BREAKOUTS = [
    "SELECT 1) # '\n; {bad}; SELECT * FROM (SELECT 1 # '",
    "SELECT $$'$$ AS y) ; {bad}; SELECT * FROM (SELECT $$'$$",
]
BREAKOUT_PAYLOADS = [
    "DROP TABLE canary",
    "CREATE TABLE made_by_attacker (a UInt8) ENGINE = Memory",
    "INSERT INTO canary VALUES (9)",
    "SELECT * FROM file($${secret}$$, $$LineAsString$$)",
    "SELECT * FROM file($$/etc/shadow$$, $$LineAsString$$)",
    "INSERT INTO FUNCTION file($${out}/f.csv$$, $$CSV$$, $$a UInt8$$) SELECT 1",
    "SELECT 1 INTO OUTFILE $${out}/g.txt$$",
]


@pytest.mark.parametrize("shape", BREAKOUTS)
@pytest.mark.parametrize("bad", BREAKOUT_PAYLOADS)
def test_reproduced_wrapper_breakouts_are_refused(store: Store, shape: str, bad: str) -> None:
    store.assert_refused(shape.format(bad=bad.format(out=store.out, secret=store.secret)))


@pytest.mark.parametrize("text", [
    "SELECT 1 # x\n; DROP TABLE canary",
    "SELECT $$;$$; DROP TABLE canary",
    "SELECT 1 # ;\n; CREATE TABLE made_by_attacker (a UInt8) ENGINE = Memory",
    "SELECT $$ $$; INSERT INTO canary VALUES (9)",
    "SELECT 1 # \n; SELECT * FROM file('/etc/shadow', 'LineAsString')",
    "SELECT 1 # \n; INSERT INTO FUNCTION file('{out}/f.csv', 'CSV', 'a UInt8') SELECT 1",
    "SELECT 1 INTO OUTFILE '{out}/f.txt'",
    "SELECT file('{secret}')",
    "SELECT * FROM canary SETTINGS readonly = 0",
])
def test_reproduced_bypasses_are_refused(store: Store, text: str) -> None:
    store.assert_refused(text.format(out=store.out, secret=store.secret))


def test_refusals_say_why(store: Store) -> None:
    def why(text: str) -> str:
        return str(store.assert_refused(text))

    assert "only one statement" in why("SELECT 1; DROP TABLE canary")
    assert "only read statements" in why("DROP TABLE canary")
    assert "INTO OUTFILE" in why(f"SELECT 1 INTO OUTFILE '{store.out}/x'")
    assert "SETTINGS" in why("SELECT 1 SETTINGS readonly = 0")
    assert "file()" in why("SELECT * FROM file('/etc/shadow')")
    assert "url()" in why("SELECT * FROM url('http://127.0.0.1:9/')")
    assert "FORMAT" in why("SELECT 1 FORMAT JSON") and "--format" in why("SELECT 1 FORMAT JSON")
    assert "empty" in why("   ") and "only comments" in why("  -- nothing\n")
    assert "cannot parse" in why("SELECT 'unterminated")


def test_sql_command_refuses_and_runs_nothing(store: Store, storage_settings: StorageSettings, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HERDWATCH_STORAGE_DSN", storage_settings.resolved_dsn())
    monkeypatch.setenv("HERDWATCH_STORAGE_DATABASE", storage_settings.database)
    monkeypatch.setenv("HERDWATCH_STORAGE_VAR_DIR", str(tmp_path / "var"))  # no endpoint file: direct path
    for text in ["SELECT 1 # x\n; DROP TABLE canary", f"SELECT file('{store.secret}')",
                 f"SELECT 1 INTO OUTFILE '{store.out}/cli.txt'"]:
        assert main(["sql", text]) == 2
        captured = capsys.readouterr()
        assert "herdwatch sql:" in captured.err and SECRET not in captured.out + captured.err
        store.assert_unchanged(text)
    assert main(["sql", "--format", "csv", "SHOW TABLES"]) == 0
    assert "canary" in capsys.readouterr().out


def test_the_session_stays_writable_for_the_owner(store: Store) -> None:
    store.queries.query("SELECT count() FROM canary")
    store.client.command("INSERT INTO canary VALUES (2)")
    assert store.client.query("SELECT count() FROM canary").result_rows[0][0] == 2


def test_chdb_store_directory_is_private(tmp_path: Path) -> None:
    fresh = tmp_path / "a" / "clickhouse"
    make_private_dir(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o755)
    make_private_dir(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


def test_connect_makes_the_store_directory_private(chdb_path: Path, storage_settings: StorageSettings) -> None:
    # one process opens one chDB path: loosen this session's own path and connect to it again
    os.chmod(chdb_path, 0o755)
    connect(storage_settings)
    assert stat.S_IMODE(chdb_path.stat().st_mode) == 0o700
