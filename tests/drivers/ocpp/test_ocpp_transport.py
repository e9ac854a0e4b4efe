"""The charge point id in the URL path (OCPP-J 1.6 section 3.1.1, 2.0.1 Part 4 section 3.1.1)."""

from __future__ import annotations

import pytest

from drivers.ocpp.transport import charge_point_id


@pytest.mark.parametrize(
    ("path", "prefix", "ident"),
    [
        ("/CP-001", "/", "CP-001"),
        ("/ocpp/CP-001", "/ocpp/", "CP-001"),
        ("/ocpp/CP%20001?x=1", "/ocpp/", "CP 001"),  # percent-decoded, query ignored
        ("/ocpp/", "/ocpp/", None),
        ("/other/CP-001", "/ocpp/", None),
        ("/ocpp/a/b", "/ocpp/", None),
        ("/ocpp/a%2Fb", "/ocpp/", None),  # a slash smuggled in would break device ids
        ("/ocpp/" + "x" * 49, "/ocpp/", None),  # identities are at most 48 characters
        ("/ocpp/a%0Ab", "/ocpp/", None),
    ],
)
def test_charge_point_id(path: str, prefix: str, ident: str | None) -> None:
    assert charge_point_id(path, prefix) == ident
