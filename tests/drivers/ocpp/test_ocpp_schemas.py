"""Contract: what the endpoint relies on from the `ocpp` package's schema files and fastjsonschema.

If a release of either changes one of these, this file fails before a charge point notices:
- the published schema files exist for both directions of every action the sessions route and
  of the gateway's own CALLs, and the set of actions they define is the versions' Action enums;
- the compiled validators accept the specifications' valid payloads unchanged (no defaults
  written in, `format` not enforced), and refuse known-bad ones with the CALLERROR code the
  specifications name (OCPP-J 1.6 section 4.2.3, 2.0.1 Part 4 section 4.3);
- no routed schema uses `multipleOf` (float precision makes it refuse valid decimals);
- each message is validated exactly once per direction.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from ocpp.v16.enums import Action as Action16
from ocpp.v201.enums import Action as Action201

from drivers.ocpp.decode import V16, V201
from drivers.ocpp.schemas import (
    REQUEST,
    RESPONSE,
    PayloadError,
    is_compiled,
    known_actions,
    schema,
    validator,
)
from drivers.ocpp.session import Route, Session16, Session201
from tests.drivers.ocpp.support import running_driver

SESSIONS = [Session16, Session201]


@pytest.mark.parametrize("session", SESSIONS, ids=lambda s: s.version)
def test_schema_files_exist_for_every_routed_action(session: Any) -> None:
    actions = set(session.routes) | set(session.outgoing)
    assert {"BootNotification", "Heartbeat", "StatusNotification", "MeterValues"} <= actions
    for action in actions:
        for direction in (REQUEST, RESPONSE):
            definition = schema(session.version, action, direction)
            assert definition is not None, (action, direction)
            assert definition["type"] == "object"
            assert "multipleOf" not in json.dumps(definition), (action, direction)


def test_known_actions_are_the_enums_of_each_version() -> None:
    assert known_actions(V16) == {a.value for a in Action16}
    assert known_actions(V201) == {a.value for a in Action201}
    assert schema(V16, "TransactionEvent", REQUEST) is None  # a 2.0.1-only action
    with pytest.raises(LookupError):
        validator(V16, "TransactionEvent", REQUEST)


def test_validators_are_compiled_once_on_first_use_and_shared() -> None:
    assert validator(V16, "MeterValues", REQUEST) is validator(V16, "MeterValues", REQUEST)
    # routes compile lazily, once: an action nobody sends is never compiled
    route = Session16.routes["DataTransfer"]
    assert not is_compiled(V16, "DataTransfer", RESPONSE)
    route.check_response({"status": "Accepted"})
    assert is_compiled(V16, "DataTransfer", RESPONSE)
    compiled = validator(V16, "DataTransfer", RESPONSE)
    route.check_response({"status": "Accepted"})
    assert validator(V16, "DataTransfer", RESPONSE) is compiled
    with pytest.raises(PayloadError):
        route.check_response({"status": "Maybe"})


# Valid payloads: the examples of OCPP-J 1.6 section 4.1.x / 2.0.1 Part 4 section 4.2 plus
# timestamps without an offset (format: date-time is not enforced, as with the ocpp package).
VALID = [
    (V16, "BootNotification", REQUEST, {"chargePointVendor": "VendorX", "chargePointModel": "SingleSocketCharger"}),
    (V16, "BootNotification", RESPONSE, {"status": "Accepted", "currentTime": "2013-02-01T20:53:32.486Z",
                                         "interval": 300}),
    (V16, "StatusNotification", REQUEST, {"connectorId": 1, "errorCode": "NoError", "status": "Available",
                                          "timestamp": "2026-01-01T00:00:00"}),
    (V201, "BootNotification", REQUEST, {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}),
    (V201, "TriggerMessage", RESPONSE, {"status": "Accepted"}),
]


@pytest.mark.parametrize(("version", "action", "direction", "payload"), VALID)
def test_valid_payloads_pass_unchanged(version: str, action: str, direction: str, payload: dict) -> None:
    before = copy.deepcopy(payload)
    assert validator(version, action, direction)(payload) is None
    assert payload == before  # nothing written in (use_default=False)


# Known-bad payloads -> the code each specification names for them.
BAD = [
    # "somestring": 12 is the specifications' own example of a data type constraint violation
    (V16, "Authorize", REQUEST, {"idTag": 12}, "TypeConstraintViolation"),
    (V201, "Authorize", REQUEST, {"idToken": {"idToken": 12, "type": "Central"}}, "TypeConstraintViolation"),
    # CiString20Type: 21 characters
    (V16, "Authorize", REQUEST, {"idTag": "x" * 21}, "TypeConstraintViolation"),
    # "Payload for Action is incomplete"
    (V16, "BootNotification", REQUEST, {"chargePointVendor": "VendorX"}, "ProtocolError"),
    (V201, "Heartbeat", RESPONSE, {}, "ProtocolError"),
    # not the PDU of the action: a key it does not have, a value outside the enumeration
    (V16, "Heartbeat", REQUEST, {"extra": 1}, "FormatViolation"),
    (V16, "StatusNotification", REQUEST, {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"},
     "FormatViolation"),
]


@pytest.mark.parametrize(("version", "action", "direction", "payload", "code"), BAD)
def test_known_bad_payloads_get_the_spec_code(version: str, action: str, direction: str, payload: dict,
                                              code: str) -> None:
    with pytest.raises(PayloadError) as refused:
        validator(version, action, direction)(payload)
    assert refused.value.code == code


async def test_each_message_is_validated_once_per_direction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, int] = {"request": 0, "response": 0}
    route = Session16.routes["Heartbeat"]

    def counting(direction: str, check: Any) -> Any:
        def wrapped(payload: Any) -> None:
            calls[direction] += 1
            check(payload)
        return wrapped

    monkeypatch.setitem(Session16.routes, "Heartbeat", Route(
        route.handler, counting("request", route.check_request), counting("response", route.check_response)))
    async with running_driver(tmp_path) as gw:
        async with websockets.connect(gw.url + "SIM0001", subprotocols=["ocpp1.6"]) as cp:
            for n in range(3):
                await cp.send(f'[2, "h{n}", "Heartbeat", {{}}]')
                answer = json.loads(await cp.recv())
                assert answer[:2] == [3, f"h{n}"] and "currentTime" in answer[2]
    assert calls == {"request": 3, "response": 3}


# The validators compile from lean source (no annotations, no schema literals in the error paths):
# on any payload they must judge exactly as fastjsonschema compiling the published file does.
ROUTED = sorted({(s.version, action, direction) for s in SESSIONS for action in (*s.routes, *s.outgoing)
                 for direction in (REQUEST, RESPONSE)})
SPEC_CODES = {"type": "TypeConstraintViolation", "maxLength": "TypeConstraintViolation", "required": "ProtocolError"}
_stock_validators: dict[tuple[str, str, str], Any] = {}


def _names_and_enums(node: Any, names: set[str], enums: set[Any]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("properties", "definitions"):
                names.update(value)
            if key == "enum":
                enums.update(value)
            _names_and_enums(value, names, enums)
    elif isinstance(node, list):
        for item in node:
            _names_and_enums(item, names, enums)


@given(data=st.data())  # examples per the profile (tests/conftest.py): 300 in CI
def test_lean_validators_judge_like_fastjsonschema_on_the_published_files(data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(ROUTED))
    definition = schema(*key)
    assert definition is not None
    if key not in _stock_validators:
        _stock_validators[key] = fastjsonschema.compile(definition, use_default=False, use_formats=False)
    names: set[str] = set()
    enums: set[Any] = set()
    _names_and_enums(definition, names, enums)
    keys = st.sampled_from(sorted(names) or ["x"]) | st.text(max_size=8)  # some have no properties
    leaves = (st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False) | st.text(max_size=25)
              | st.sampled_from(sorted(enums, key=str) or [""]) | st.just("x" * 256))
    payload = data.draw(st.recursive(
        leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=6),
        max_leaves=12).filter(lambda p: isinstance(p, dict)) | st.dictionaries(keys, leaves, max_size=8))
    try:
        _stock_validators[key](copy.deepcopy(payload))
    except fastjsonschema.JsonSchemaValueException as stock:
        with pytest.raises(PayloadError) as lean:
            validator(*key)(payload)
        assert lean.value.code == SPEC_CODES.get(stock.rule or "", "FormatViolation")
        assert lean.value.cause == str(stock.message)[:200]
    else:
        assert validator(*key)(payload) is None
