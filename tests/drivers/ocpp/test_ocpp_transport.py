"""The charge point id in the URL path (OCPP-J 1.6 section 3.1.1, 2.0.1 Part 4 section 3.1.1),
an identifierString (2.0.1 Part 2, primitive datatypes) after percent-decoding."""

from __future__ import annotations

import pytest

from drivers.ocpp.transport import charge_point_id


@pytest.mark.parametrize(
    ("path", "prefix", "ident"),
    [
        ("/CP-001", "/", "CP-001"),
        ("/ocpp/CP-001", "/ocpp/", "CP-001"),
        ("/ocpp/CP%2D001?x=1", "/ocpp/", "CP-001"),  # percent-decoded, query ignored
        ("/ocpp/CP%20001", "/ocpp/", None),  # a space is no identifierString character
        ("/CPA-0001%20", "/", None),
        ("/CPA%E2%80%900001", "/", None),  # U+2010 HYPHEN, a look-alike of '-'
        ("/CPA%FF0001", "/", None),  # not UTF-8
        ("/CPA%250001", "/", None),  # decoded once only: '%' stays and is refused
        ("/a*-_=:+|@.Z9", "/", "a*-_=:+|@.Z9"),  # every punctuation identifierString allows
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
