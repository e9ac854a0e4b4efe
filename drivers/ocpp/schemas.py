"""Payload validation from the official OCPP JSON schemas, compiled once per action.

The schemas are the ones the OCPP specifications publish (OCPP-J 1.6 JSON schemas, OCPP 2.0.1
Part 3 "JSON schemas"); the `ocpp` package ships them as package data (`ocpp/v16/schemas`,
`ocpp/v201/schemas`) and this module only *reads those files*: it imports no code of the `ocpp`
package (whose own validation runs jsonschema, ~0.5 ms per MeterValues, in an executor thread).
fastjsonschema turns each schema into a Python function once; a MeterValues then validates in
~10 us. It was chosen over msgspec Structs generated from the schemas because it consumes the
published files as they are (no generator to keep in step with them) and reports which keyword
failed, which is what the CALLERROR code is chosen from.

Validation settings match what the spec's schemas mean and what the `ocpp` package did:
- `use_default=False`: validation never writes default values into a payload (the proxy and the
  mirror see the wire payload exactly as sent);
- `use_formats=False`: `format: date-time`/`uri` are annotations in JSON Schema draft 4/6; the
  decoder parses timestamps itself and counts bad ones (`bad_timestamp`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from importlib.resources import files
from typing import Any, Final

import fastjsonschema

from drivers.ocpp.decode import V16, V201

__all__ = ["REQUEST", "RESPONSE", "PayloadError", "Validator", "is_compiled", "known_actions", "lazy_validator", "schema",
           "validator"]

REQUEST: Final = "request"
RESPONSE: Final = "response"

_FOLDER: Final[dict[str, str]] = {V16: "v16", V201: "v201"}


class PayloadError(Exception):
    """A payload its schema refuses; `code` is the CALLERROR code (2.0.1 spelling)."""

    def __init__(self, code: str, cause: str) -> None:
        super().__init__(f"{code}: {cause}")
        self.code = code
        self.cause = cause


# Failed schema keyword -> CALLERROR code (OCPP-J 1.6 section 4.2.3 and 2.0.1 Part 4 section 4.3,
# table "Valid Error Codes"): a wrong JSON type or a string over its maxLength violates a data
# type constraint; a missing required field makes the payload incomplete (ProtocolError); any
# other violation (unknown key, value outside an enumeration) makes it not conform to the
# action's PDU (FormatViolation; 1.6 spells it FormationViolation, see session.error_code).
_CODES: Final[dict[str, str]] = {
    "type": "TypeConstraintViolation",
    "maxLength": "TypeConstraintViolation",
    "required": "ProtocolError",
}
_DEFAULT_CODE: Final = "FormatViolation"


def _schema_file(version: str, action: str, direction: str) -> str:
    # 1.6 names requests after the action ("MeterValues.json"); 2.0.1 adds "Request".
    if direction == RESPONSE:
        return f"{action}Response.json"
    return f"{action}Request.json" if version == V201 else f"{action}.json"


def schema(version: str, action: str, direction: str) -> dict[str, Any] | None:
    """The published schema of one message, or None if the version has no such action."""
    path = files("ocpp").joinpath(_FOLDER[version], "schemas", _schema_file(version, action, direction))
    if not path.is_file():
        return None
    # The 2.0.1 files start with a UTF-8 byte order mark.
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8-sig"))
    return loaded


def known_actions(version: str) -> frozenset[str]:
    """Every action the version defines: the ones with a request schema (either direction)."""
    folder = files("ocpp").joinpath(_FOLDER[version], "schemas")
    names = [entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".json")]
    if version == V201:
        return frozenset(n[:-7] for n in names if n.endswith("Request"))
    return frozenset(n for n in names if not n.endswith("Response"))


Validator = Callable[[Any], None]

# Keywords that only annotate (JSON Schema draft 6, section 10 "Schema annotations" and the
# OCPP generator's own `javaType`/`comment`): they never change what validates, but the code
# fastjsonschema generates repeats them in every error path. `default` is one too, since
# validation never writes defaults in (use_default=False above).
_ANNOTATIONS: Final = frozenset({"description", "javaType", "$comment", "comment", "title", "default", "examples"})
# Keywords whose value maps names (of properties or definitions) to subschemas: their keys are
# names such as "description", not keywords, and are kept.
_NAME_MAPS: Final = frozenset({"properties", "definitions", "patternProperties", "dependencies"})
# Each `raise` fastjsonschema generates is one line ending in `definition=<the subschema as a
# literal>, rule='<keyword>')`; the literal is for debugging, nothing here reads it.
_DEFINITION_LITERAL: Final = re.compile(r", definition=.*, rule='(\w+)'\)$", re.MULTILINE)


def _without_annotations(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: ({name: _without_annotations(sub) for name, sub in value.items()} if key in _NAME_MAPS
                      else _without_annotations(value))
                for key, value in node.items() if key not in _ANNOTATIONS}
    if isinstance(node, list):
        return [_without_annotations(item) for item in node]
    return node


def _compile_lean(version: str, action: str, direction: str, definition: dict[str, Any]) -> Callable[[Any], Any]:
    """fastjsonschema's validator for `definition`, compiled from less source.

    The generated source repeats the whole schema, descriptions included, as a dict literal in
    every error path (190 KiB for a 2.0.1 TransactionEvent request). Compiling the routed
    actions of both versions that way cost 7.7 MiB for good and peaked 9 MiB above it during a
    boot storm (issue 12: the largest start-up cost after `cryptography`). Without annotations
    and with those literals replaced by None the source is a third as long, the validators hold
    3 MiB and the peak falls by 6 MiB; what validates, the error message and the failed keyword
    (`rule`, which picks the CALLERROR code) stay the same. If a fastjsonschema release writes
    its raises differently the literals are kept: larger, still correct.
    """
    source = fastjsonschema.compile_to_code(_without_annotations(definition), use_default=False, use_formats=False)
    lean, replaced = _DEFINITION_LITERAL.subn(r", definition=None, rule='\1')", source)
    if replaced == source.count("raise JsonSchemaValueException("):
        source = lean
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<ocpp {version} {action} {direction} schema>", "exec"), namespace)  # noqa: S102
    validate: Callable[[Any], Any] = namespace["validate"]
    return validate
_compiled: dict[tuple[str, str, str], Validator] = {}


def validator(version: str, action: str, direction: str) -> Validator:
    """A function that returns None for a valid payload and raises PayloadError otherwise.

    Compiled on first use and kept for the process: one per (version, action, direction), shared
    by every session. Raises LookupError if the version has no schema for the action.
    """
    key = (version, action, direction)
    check = _compiled.get(key)
    if check is not None:
        return check
    definition = schema(version, action, direction)
    if definition is None:
        raise LookupError(f"OCPP {version} has no {direction} schema for {action!r}")
    compiled = _compile_lean(version, action, direction, definition)
    invalid = fastjsonschema.JsonSchemaValueException

    def check_payload(payload: Any) -> None:
        try:
            compiled(payload)
        except invalid as error:
            code = _CODES.get(error.rule or "", _DEFAULT_CODE)
            raise PayloadError(code, str(error.message)[:200]) from None

    _compiled[key] = check_payload
    return check_payload


def is_compiled(version: str, action: str, direction: str) -> bool:
    return (version, action, direction) in _compiled


def lazy_validator(version: str, action: str, direction: str) -> Validator:
    """Like `validator`, but compiled on the first payload: compiling every routed action of
    both versions at import cost 0.7 s and about 7 MiB, most of it for actions a city's
    charge points never send. The schema file must exist now (LookupError otherwise)."""
    if schema(version, action, direction) is None:
        raise LookupError(f"OCPP {version} has no {direction} schema for {action!r}")
    compiled: list[Validator] = []

    def check_payload(payload: Any) -> None:
        if not compiled:
            compiled.append(validator(version, action, direction))
        compiled[0](payload)

    return check_payload
