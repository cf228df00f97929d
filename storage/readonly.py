"""Running an arbitrary SQL text read-only, decided by ClickHouse's own parser (never by scanning text).

`run_read_only(client, sql, params)` is the one way `herdwatch sql`, the named queries and the sink's
query endpoint run SQL someone typed:

1. **One statement.** `formatQuery()` parses the text with the engine's parser, passed as a bound
   parameter (the text is never pasted into SQL). Several statements, `#`/`--`/`/* */` comments hiding a
   `;`, `$$...$$` strings: the parser sees what the engine would run, and refuses multi-statements.
   Its output, the canonical text of that one statement, is what is checked and what runs.
2. **A read statement.** `EXPLAIN AST <canonical>` gives the statement's tree. Its root must be a
   read: SELECT (WITH, UNION, INTERSECT, subqueries), DESCRIBE, SHOW, EXISTS, or EXPLAIN of a SELECT.
3. **Nothing that leaves the store.** No `INTO OUTFILE` (chDB writes the file even under readonly = 1),
   no SETTINGS clause, no FORMAT clause, no table function outside ALLOWED_TABLE_FUNCTIONS (file, url, s3,
   remote, executable, python, mysql, ... all read or write outside the store) and no scalar function
   that reads files (`file()` works under readonly = 1).
4. **Run read-only.** The canonical text runs with READ_SETTINGS (readonly = 1, time and row limits) set by this
   code, not by the text; under readonly = 1 the text cannot change them.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from storage import signals

# Set by the server-side code for every query; readonly last, so the engine accepts the ones before it.
# The limits keep one query from holding the store (the sink shares its client) or the caller's memory.
READ_SETTINGS: dict[str, Any] = {"max_execution_time": 300, "max_result_rows": 1_000_000, "readonly": 1}

# Table functions that only compute rows in memory or read this store's own tables.
ALLOWED_TABLE_FUNCTIONS = ("numbers", "numbers_mt", "zeros", "zeros_mt", "values", "generateRandom", "null", "view",
                           "merge", "generateSeries", "generate_series", "primes", "format")
_ALLOWED = frozenset(name.lower() for name in ALLOWED_TABLE_FUNCTIONS)
# Scalar functions that read files or models from disk (their names are not table functions).
DENIED_FUNCTIONS = frozenset({"file", "catboostevaluate", "naivebayesclassifier"})

SELECT_ROOTS = frozenset({"SelectWithUnionQuery"})
READ_ROOTS = SELECT_ROOTS | frozenset({
    "DescribeQuery", "ShowTables", "ShowColumns", "ShowIndexes", "ShowFunctions", "ShowEngineQuery",
    "ShowCreateTableQuery", "ShowCreateViewQuery", "ShowCreateDatabaseQuery", "ShowProcesslistQuery",
    "ExistsTableQuery", "ExistsViewQuery", "ExistsDatabaseQuery", "ExistsDictionaryQuery", "Explain",
})
ALLOWED_STATEMENTS = "SELECT (with WITH, UNION, subqueries), DESCRIBE, SHOW, EXISTS or EXPLAIN SELECT"
# the format ast() asks for; appended by the client, it lands in the dump as the statement's last child
DUMP_FORMAT = "TabSeparatedRaw"

_LINE = re.compile(r"^( *)(\S+)(?: (\S+))?")


class UnsafeQuery(ValueError):
    """The SQL was refused before anything ran; the message says why and what to do instead."""


@dataclass(frozen=True)
class Node:
    depth: int
    kind: str
    name: str


def _refuse(why: str, message: str) -> UnsafeQuery:
    signals.query_refused.emit(why=why)
    return UnsafeQuery(message)


def _engine_message(e: Exception) -> str:
    text = str(e).strip()
    for line in text.splitlines():
        if "DB::Exception" in line:
            return line.strip()
    return text.splitlines()[0] if text else type(e).__name__


_table_functions: dict[int, frozenset[str]] = {}
_table_functions_lock = threading.Lock()


def table_functions(client: Any) -> frozenset[str]:
    """Every table function the engine knows (lower case), asked once per client."""
    with _table_functions_lock:
        known = _table_functions.get(id(client))
        if known is None:
            rows = client.query("SELECT name FROM system.table_functions").result_rows
            known = frozenset(str(r[0]).lower() for r in rows)
            _table_functions[id(client)] = known
        return known


def canonical(client: Any, sql: str) -> str:
    """The engine's own formatting of the one statement in `sql`; UnsafeQuery if it is not exactly one."""
    if not sql.strip():
        raise _refuse("empty", "the SQL is empty: give one SELECT, DESCRIBE, SHOW, EXISTS or EXPLAIN")
    try:
        rows = client.query("SELECT formatQuery({sql:String})", parameters={"sql": sql}).result_rows
    except Exception as e:
        message = _engine_message(e)
        if "Empty query" in message:
            raise _refuse("empty", "the SQL is only comments: give one SELECT, DESCRIBE, SHOW, EXISTS or "
                                   "EXPLAIN") from e
        if "Multi-statements" in message:
            raise _refuse("statements", "only one statement can be run: remove the ';' and what follows "
                                        f"(the engine's parser found several)\n  {message}") from e
        raise _refuse("syntax", f"cannot parse the SQL: {message}") from e
    return str(rows[0][0])


def ast(client: Any, text: str, params: dict[str, Any] | None) -> list[Node]:
    """The statement's tree as the engine dumps it (`EXPLAIN AST`), one Node per line."""
    try:
        # raw_query: query() would take an EXPLAIN of `... LIMIT 0` for a column probe and fail on its rows
        raw = client.raw_query(f"EXPLAIN AST {text}", parameters=params or None, fmt=DUMP_FORMAT)
    except Exception as e:
        raise _refuse("syntax", f"cannot parse the SQL: {_engine_message(e)}") from e
    nodes = []
    for line in bytes(raw).decode("utf-8", "replace").split("\n"):
        m = _LINE.match(line)
        # An alias holding a line break splits its node's line in two. Every rule in check() reads a node's
        # own line (kind, name, indentation), never which line is whose parent, so such extra lines can
        # only add refusals: they cannot hide a real node or move it.
        if m:
            nodes.append(Node(len(m.group(1)), m.group(2), m.group(3) or ""))
    return nodes


def check(nodes: list[Node], known_table_functions: frozenset[str]) -> None:
    """Refuse (UnsafeQuery) unless the tree is one read statement that touches nothing outside the store."""
    if not nodes:
        raise _refuse("syntax", "cannot parse the SQL: the engine returned no syntax tree")
    root = nodes[0].kind
    if root not in READ_ROOTS:
        raise _refuse("statement", f"only read statements can be run ({ALLOWED_STATEMENTS}); "
                                   f"this one is a {root}: writes, DDL, SET, SYSTEM and the like are refused")
    # Only the statement itself (depth 0) or the SELECT under EXPLAIN (depth 1) carries output options, so
    # INTO OUTFILE / COMPRESSION show as Literal children at depth 1 or 2, where no read has a Literal.
    if any(n.kind == "Literal" and n.depth <= 2 for n in nodes):
        raise _refuse("outfile", "INTO OUTFILE is refused: results come back to you; redirect them to a "
                                 "file yourself (e.g. `herdwatch sql --format csv ... > out.csv`)")
    top = [n for n in nodes if n.depth == 1]
    if root == "Explain":
        inner = [n for n in top if n.kind != "Set"]
        if not inner or inner[0].kind not in SELECT_ROOTS:
            raise _refuse("statement", "EXPLAIN is accepted for a SELECT only: EXPLAIN [PLAN|SYNTAX|"
                                       "PIPELINE|ESTIMATE|AST|QUERY TREE] SELECT ...")
    last = nodes[-1]
    if last.kind == "Identifier" and last.depth == 1 and last.name != DUMP_FORMAT:
        raise _refuse("format", f"the FORMAT clause (FORMAT {last.name}) is refused: choose the output "
                                "with --format table|json|csv")
    for n in nodes:
        if n.kind == "Set" and not (n.depth == 1 and root == "Explain"):
            raise _refuse("settings", "SETTINGS clauses are refused: queries run with fixed read-only "
                                      "settings (readonly = 1); remove the SETTINGS clause")
        if n.kind == "Function":
            name = n.name.lower()
            if name in DENIED_FUNCTIONS or (name in known_table_functions and name not in _ALLOWED):
                raise _refuse("function", f"function {n.name}() is refused: it reads or writes outside the "
                                          "store (files, network, processes). Allowed table functions: "
                                          + ", ".join(ALLOWED_TABLE_FUNCTIONS))


def read_only_sql(client: Any, sql: str, params: dict[str, Any] | None = None) -> str:
    """The canonical text of `sql` if it is one safe read statement; raises UnsafeQuery otherwise."""
    text = canonical(client, sql)
    check(ast(client, text, params), table_functions(client))
    return text


def run_read_only(client: Any, sql: str, params: dict[str, Any] | None = None) -> Any:
    """Check `sql` (read_only_sql) and run its canonical text with READ_SETTINGS; the engine's result.

    Engine errors while running (unknown table, bad parameter, ...) propagate as the client raised them.
    """
    text = read_only_sql(client, sql, params)
    return client.query(text, parameters=params or None, settings=dict(READ_SETTINGS))
