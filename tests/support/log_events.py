"""Log event names: stable snake_case keys, checked on real output and on the source.

A log line's `event` is its key for alerting and searching (`uplink_unavailable`, never a
sentence that a reworded message would break); what a person needs to read goes into fields
such as `note`. Lines the standard library bridge forwards from paho, websockets, pymodbus or
gmqtt carry a `logger` field and keep the library's own message: they are not checked.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
LEVELS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "msg"})


def events_of(json_lines: Iterable[str]) -> list[str]:
    """The event of every gateway line among JSON log lines (library lines left out). A line that
    is not JSON fails: the gateway's output is one JSON object per line."""
    events = []
    for line in json_lines:
        line = line.strip()
        if not line:
            continue
        if line.startswith("<") and line[1:2].isdigit():  # the journal's priority prefix
            line = line[line.index(">") + 1:]
        record = json.loads(line)
        if "logger" not in record:
            events.append(record["event"])
    return events


def not_snake_case(events: Iterable[str]) -> list[str]:
    return sorted({e for e in events if not SNAKE_CASE.match(e)})


def _event_names(argument: ast.expr) -> Iterator[ast.expr]:
    """The expressions an event argument can take: both arms of `a if c else b`."""
    if isinstance(argument, ast.IfExp):
        yield from _event_names(argument.body)
        yield from _event_names(argument.orelse)
    else:
        yield argument


def logger_calls_without_a_key(roots: Iterable[Path]) -> list[str]:
    """`file:line: call` for every logging call in `roots` whose event is not a snake_case string
    literal. A logging call is `<something with log in its name>.<level>(event, ...)`."""
    bad = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in LEVELS and "log" in ast.unparse(node.func.value).lower()):
                    continue
                arguments = [_event_names(node.args[0])] if node.args else []
                names = [a for each in arguments for a in each]
                if names and all(isinstance(n, ast.Constant) and isinstance(n.value, str)
                                 and SNAKE_CASE.match(n.value) for n in names):
                    continue
                bad.append(f"{path}:{node.lineno}: {ast.unparse(node)[:120]}")
    return bad
