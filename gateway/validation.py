"""Check a TOML table against a msgspec Struct key by key, collecting every problem.

msgspec stops at the first bad value of a table, so a technician fixing a config would need one
run per mistake. This walks the table against the Struct's type information
(`msgspec.inspect`) instead and reports each bad key with its path, what was expected and what
was found, in plain words: a pattern is named by what it means ("16 hex digits"), never shown as
a regular expression, and a secret's value is never repeated, only its length.
"""

from __future__ import annotations

import math
import re
import typing
from typing import Annotated, Any

import msgspec
import msgspec.inspect as mi

__all__ = [
    "PATTERN_WORDS",
    "SECRET_KEY",
    "check_table",
    "describe_error",
    "is_secret_key",
    "shown",
]

# What each pattern used in a config Struct means, for messages. A test checks that every
# pattern of every shipped Config is listed here.
PATTERN_WORDS: dict[str, str] = {
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$": (
        "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
    ),
    r"^https?://[^\s/]+(/[^\s]*)?$": "an http:// or https:// URL without spaces",
    r"^[A-Za-z0-9_]*$": "letters, digits and '_' only (or nothing)",
    r"^[^#+$/\x00][^#+\x00]*[^#+/\x00]$|^[^#+$/\x00]$": (
        "MQTT topic levels without wildcards (+, #), not starting with '$' or '/', not ending with '/'"
    ),
    r"^(hci[0-9]{1,3})?$": "an adapter name like hci0 (or nothing for the first adapter)",
    r"^/([A-Za-z0-9._~-]+/)*$": "a URL path starting and ending with '/' (e.g. /ocpp/)",
    r"^([0-9A-Fa-f]{2}){8,40}$": "16 to 80 hex digits (8 to 40 bytes)",
    r"^[0-9a-fA-F]{16}$": "16 hex digits",
    r"^([0-9a-fA-F]{32})?$": "32 hex digits (or nothing)",
    r"^([0-9a-fA-F]{8})?$": "8 hex digits (or nothing)",
    r"^([0-9a-fA-F]{16})?$": "16 hex digits (or nothing)",
    r"^[0-9a-fA-F]{6}$": "6 hex digits",
    r"^[0-9A-Za-z]$": "one letter or digit",
}

# Keys whose values are secrets: never echoed in a message, only their length.
SECRET_KEY = re.compile(r"(password|passwd|secret|token|skey|app_key|_keys?$|^keys?$|credential)", re.I)
_NAME_KEY = re.compile(r"_file$")  # tls key_file is a path, not a secret


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key)) and not _NAME_KEY.search(key)


def _path_is_secret(path: str) -> bool:
    return any(is_secret_key(part) for part in re.split(r"[.\[\]]+", path) if part)


def shown(value: Any, path: str) -> str:
    """A found value as a message shows it: repr, shortened, and hidden under a secret key."""
    if _path_is_secret(path):
        if isinstance(value, str):
            return f"a value of {len(value)} characters (hidden)"
        return f"a {_kind(value)} (hidden)"
    text = repr(value)
    return text if len(text) <= 80 else text[:70] + "...(" + str(len(text)) + " characters)"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "whole number"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _bounds(t: Any) -> str:
    parts = []
    for attr, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        bound = getattr(t, attr, None)
        if bound is not None:
            parts.append(f"{word} {bound:g}" if isinstance(bound, float) else f"{word} {bound}")
    return " and ".join(parts)


def describe(t: mi.Type) -> str:
    """A type in plain words: 'a whole number >= 1', 'one of "a", "b"', '16 hex digits'."""
    if isinstance(t, mi.IntType):
        b = _bounds(t)
        return "a whole number" + (f" {b}" if b else "")
    if isinstance(t, mi.FloatType):
        b = _bounds(t)
        return "a number" + (f" {b}" if b else "")
    if isinstance(t, mi.BoolType):
        return "true or false"
    if isinstance(t, mi.StrType):
        if t.pattern is not None:
            return PATTERN_WORDS.get(t.pattern, "text in the format the README shows")
        if t.min_length is not None and t.max_length is not None:
            return f"text of {t.min_length} to {t.max_length} characters"
        if t.min_length:
            return f"text of at least {t.min_length} characters"
        if t.max_length is not None:
            return f"text of at most {t.max_length} characters"
        return "text"
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(_literal(v) for v in t.values)
    if isinstance(t, mi.StructType | mi.DictType):
        return "a table"
    if isinstance(t, mi.ListType):
        inner = describe(t.item_type)
        return f"a list of {inner.removeprefix('a ').removeprefix('an ')}s" if isinstance(
            t.item_type, mi.StructType
        ) else f"a list (each {inner})"
    if isinstance(t, mi.UnionType):
        return " or ".join(describe(m) for m in t.types if not isinstance(m, mi.NoneType))
    return "a valid value"


def _literal(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def check_table(value: Any, struct: type[msgspec.Struct], path: str, problems: list[str]) -> None:
    """Append a message per problem of `value` (a TOML table) against `struct`."""
    _check(value, mi.type_info(struct), path, problems)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check(value: Any, t: mi.Type, path: str, problems: list[str]) -> None:
    where = path or "(top level)"
    if isinstance(t, mi.AnyType):
        return
    if isinstance(t, mi.UnionType):
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        if len(members) == 1:
            _check(value, members[0], path, problems)
            return
        for member in members:
            trial: list[str] = []
            _check(value, member, path, trial)
            if not trial:
                return
        problems.append(f"{where}: expected {describe(t)}, found {shown(value, path)}")
        return
    if isinstance(t, mi.StructType):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a table, found {shown(value, path)}")
            return
        fields = {f.encode_name: f for f in t.fields}
        for key in value:
            if key not in fields:
                problems.append(
                    f"{_join(path, key)}: unknown key (check the spelling; known keys: "
                    f"{', '.join(sorted(fields))})"
                )
        for name, field in fields.items():
            if name in value:
                _check(value[name], field.type, _join(path, name), problems)
            elif field.required:
                problems.append(f"{_join(path, name)}: required key is missing (expected {describe(field.type)})")
        return
    if isinstance(t, mi.DictType):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a table, found {shown(value, path)}")
            return
        for key, item in value.items():
            _check(item, t.value_type, _join(path, str(key)), problems)
        _length(value, t, path, problems, "entries")
        return
    if isinstance(t, mi.ListType):
        if not isinstance(value, list):
            problems.append(f"{where}: expected {describe(t)}, found {shown(value, path)}")
            return
        for index, item in enumerate(value):
            _check(item, t.item_type, f"{path}[{index}]", problems)
        _length(value, t, path, problems, "items")
        return
    if isinstance(t, mi.LiteralType):
        if value not in t.values or isinstance(value, bool) != any(isinstance(v, bool) for v in t.values):
            problems.append(f"{where}: expected {describe(t)}, found {shown(value, path)}")
        return
    if isinstance(t, mi.BoolType):
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true or false, found {shown(value, path)}")
        return
    if isinstance(t, mi.IntType | mi.FloatType):
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if not numeric or (isinstance(t, mi.IntType) and not isinstance(value, int)):
            problems.append(f"{where}: expected {describe(t)}, found {shown(value, path)}")
            return
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where}: expected {describe(t)}, found {shown(value, path)}")
            return
        if not _in_bounds(value, t):
            problems.append(f"{where}: expected {describe(t)}, found {shown(value, path)}")
        return
    if isinstance(t, mi.StrType):
        if not isinstance(value, str):
            problems.append(f"{where}: expected {describe(t)}, found {shown(value, path)}")
            return
        too_short = t.min_length is not None and len(value) < t.min_length
        too_long = t.max_length is not None and len(value) > t.max_length
        mismatch = t.pattern is not None and re.search(t.pattern, value) is None
        if too_short or too_long or mismatch:
            problems.append(f"{where}: expected {describe(t)}, found {shown(value, path)}")
        return
    # any other type: msgspec's own conversion afterwards judges it


def _in_bounds(value: float, t: Any) -> bool:
    return not (
        (t.ge is not None and value < t.ge)
        or (t.gt is not None and value <= t.gt)
        or (t.le is not None and value > t.le)
        or (t.lt is not None and value >= t.lt)
        or (t.multiple_of is not None and value % t.multiple_of)
    )


def _length(value: Any, t: Any, path: str, problems: list[str], unit: str) -> None:
    if t.min_length is not None and len(value) < t.min_length:
        problems.append(f"{path}: expected at least {t.min_length} {unit}, found {len(value)}")
    if t.max_length is not None and len(value) > t.max_length:
        problems.append(f"{path}: expected at most {t.max_length} {unit}, found {len(value)}")


# -- msgspec's own messages, for what the walk cannot judge (tagged unions) ----------------------

_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")
_MISSING_RE = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")
_STEP_RE = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]")


def _lookup(raw: Any, path: str) -> tuple[bool, Any]:
    value = raw
    for key, index in _STEP_RE.findall(path):
        try:
            value = value[key] if key else value[int(index)]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, value


def _field_type(root: Any, path: str) -> Any:
    """The annotated type at a msgspec error path (for listing a Literal's choices)."""
    current = root
    for key, index in _STEP_RE.findall(path):
        if index:
            args = typing.get_args(current)
            current = args[0] if args else None
            continue
        hints = typing.get_type_hints(current, include_extras=True) if isinstance(current, type) else {}
        current = hints.get(key)
        while typing.get_origin(current) is Annotated:
            current = typing.get_args(current)[0]
    return current


def describe_error(
    error: msgspec.ValidationError, raw: Any, prefix: str = "", root: Any = None
) -> str:
    """msgspec's first error as `path: expected X, found Y` (secrets hidden)."""
    text = str(error)
    match = _PATH_RE.search(text)
    path = match.group("path") if match else ""
    message = text[: match.start()] if match else text
    where = (prefix + path).lstrip(".") or "(top level)"
    if (m := _UNKNOWN_RE.match(message)) is not None:
        return f"{where}.{m.group('field')}: unknown key (check the spelling; see config/gateway.example.toml)".lstrip(".")
    if (m := _MISSING_RE.match(message)) is not None:
        return f"{where}.{m.group('field')}: required key is missing".lstrip(".")
    found, value = _lookup(raw, path)
    expected = re.sub(r", got `[^`]*`$", "", message.removeprefix("Expected ").strip())
    if message.startswith("Invalid enum value"):
        choices = typing.get_args(_field_type(root, path)) if root is not None else ()
        expected = "one of " + ", ".join(repr(c) for c in choices) if choices else "a valid choice"
    return f"{where}: expected {expected}, " + (f"found {shown(value, where)}" if found else "found nothing")
