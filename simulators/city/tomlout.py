"""TOML out: the gateway config a city run writes (tomllib reads TOML but does not write it)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["to_toml"]


def _key(name: str) -> str:
    return name if name.replace("_", "").replace("-", "").isalnum() and name.isascii() else json.dumps(name)


def _inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, dict):
        # no spaces: a concentrator's device list is most of the file, and the gateway reads at
        # most 1 MiB of config (scale 35 of the reference city: 1.06 MB spaced, 0.95 MB not)
        return "{" + ",".join(f"{_key(k)}={_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(document: dict[str, Any], header: str = "") -> str:
    """Sections of scalars and inline tables; lists of tables as [[name]] arrays."""
    out = [f"# {line}" for line in header.splitlines()]
    for section, body in document.items():
        tables = body if isinstance(body, list) else [body]
        for table in tables:
            out.append("")
            out.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            out.extend(f"{_key(k)} = {_inline(v)}" for k, v in table.items())
    return "\n".join(out) + "\n"
