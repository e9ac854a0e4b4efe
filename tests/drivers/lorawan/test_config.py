"""The driver's config: every problem reported with its key, through the gateway's loader."""

from __future__ import annotations

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError

ABP = {"dev_eui": "70B3D57ED0000001", "activation": "abp", "dev_addr": "26011234",
       "nwk_skey": "44024241ed4ce9a68c6a8bc055233fd3", "app_skey": "ec925802ae430ca77fd3dd73cb2cc588",
       "codec": "elsys"}


def _doc(**driver: object) -> dict[str, object]:
    return {"gateway": {"id": "gw1"}, "drivers": [{"type": "lorawan", **driver}]}


def test_valid_concentrator_config() -> None:
    config = parse_config(_doc(mode="concentrator", listen="0.0.0.0:1700", profiles={"lht": {"codec": "dragino_lht65"}},
                               devices=[ABP, {"dev_eui": "70b3d57ed0000002", "activation": "otaa",
                                              "app_key": "00" * 16, "profile": "lht"}]))
    (driver,) = config.drivers
    assert driver.name == "lorawan"
    assert driver.codec_for("70b3d57ed0000002") == "dragino_lht65"  # type: ignore[attr-defined]
    assert driver.codec_for("70b3d57ed0000001") == "elsys"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("driver", "fragment"), [
    ({"mode": "concentrator", "devices": [dict(ABP, nwk_skey="")]}, "drivers[0].devices[0].nwk_skey: expected a value"),
    ({"mode": "concentrator", "devices": [{"dev_eui": "70b3d57ed0000002", "activation": "otaa"}]},
     "drivers[0].devices[0].app_key"),
    ({"mode": "concentrator", "devices": [{"dev_eui": "70b3d57ed0000002"}]}, "devices[0].activation"),
    ({"default_codec": "acme"}, "drivers[0].default_codec: expected one of"),
    ({"devices": [ABP, ABP]}, "devices[1].dev_eui: expected a unique DevEUI"),
    ({"devices": [dict(ABP, profile="nope")]}, "devices[0].profile"),
    ({"devices": [dict(ABP, dev_eui="123")]}, "drivers[0].devices[0].dev_eui"),
    ({"dedup_window": 9.0}, "drivers[0].dedup_window"),
    ({"mode": "concentrator", "listen": "1700"}, "drivers[0].listen: expected host:port"),
    ({"colour": "blue"}, "colour: unknown key"),
])
def test_problems_name_the_key(driver: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_doc(**driver))
    assert any(fragment in p for p in info.value.problems), info.value.problems


def test_config_module_stays_light() -> None:
    import subprocess
    import sys

    code = ("import sys, drivers.lorawan; "
            "print(any(m.startswith(('cryptography', 'paho')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_channels_split_from_the_device_or_its_profile() -> None:
    config = parse_config(_doc(profiles={"lpp": {"codec": "cayenne_lpp", "channels": "split"}},
                               devices=[{"dev_eui": "70b3d57ed0000001", "profile": "lpp"},
                                        {"dev_eui": "70b3d57ed0000002", "profile": "lpp", "channels": "auto"},
                                        {"dev_eui": "70b3d57ed0000003", "codec": "cayenne_lpp"}]))
    (driver,) = config.drivers
    split = [driver.split_channels_for(f"70b3d57ed000000{i}") for i in (1, 2, 3, 4)]  # type: ignore[attr-defined]
    assert split == [True, False, False, False]
    with pytest.raises(ConfigError) as info:
        parse_config(_doc(devices=[{"dev_eui": "70b3d57ed0000001", "channels": "each"}]))
    assert any("drivers[0].devices[0].channels" in p for p in info.value.problems), info.value.problems
