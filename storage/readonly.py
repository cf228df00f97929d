"""Making an arbitrary SQL text safe to run read-only: one statement, wrapped so it can only read.

The statement is run as `SELECT * FROM (<sql>) SETTINGS readonly = 1`: only a query (SELECT, WITH ...)
parses inside the parentheses, and ClickHouse refuses any write or setting change under readonly = 1.
Several statements (`...; DROP TABLE ...`) are refused before anything runs; so is a `;` hidden in a
comment. Only a `;` inside a quoted literal, or one trailing `;`, is accepted.
"""

from __future__ import annotations


class UnsafeQuery(ValueError):
    pass


def _strip(sql: str) -> str:
    """The SQL without a trailing `;`; raises UnsafeQuery if it holds more than one statement."""
    i, n = 0, len(sql)
    last_code = -1  # index after the last character that is code (not space/comment)
    semicolon_at = -1
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # doubled quote inside a literal
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise UnsafeQuery("unterminated quoted string in the SQL")
            i = j + 1
            last_code = i
            continue
        if sql.startswith("--", i) or sql.startswith("/*", i):
            end = sql.find("\n", i) if c == "-" else sql.find("*/", i + 2)
            if end < 0 and c == "/":
                raise UnsafeQuery("unterminated /* comment in the SQL")
            end = n if end < 0 else end
            if ";" in sql[i:end]:
                raise UnsafeQuery("';' inside a comment is not accepted; remove it")
            i = end + (1 if c == "-" else 2)
            continue
        if c == ";":
            if semicolon_at >= 0:
                raise UnsafeQuery("only one statement can be run (found several ';')")
            semicolon_at = i
        elif not c.isspace():
            if semicolon_at >= 0:
                raise UnsafeQuery("only one statement can be run: remove what follows the ';'")
            last_code = i + 1
        i += 1
    if last_code < 0:
        raise UnsafeQuery("the SQL is empty")
    return sql[:semicolon_at] if semicolon_at >= 0 else sql


def readonly_sql(sql: str) -> str:
    """Wrap one SELECT-like statement so the engine runs it read-only (see the module docstring)."""
    body = _strip(sql)
    return f"SELECT * FROM (\n{body}\n) SETTINGS readonly = 1"
