"""Config: every problem names its key path, what was expected and what was found."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from gateway.config import load_config, parse_config
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE = {"gateway": {"id": "gw-1", "state_dir": "/tmp/x"}, "drivers": [{"type": "replay", "path": "a.csv"}]}


def problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.problems


def test_defaults_fill_in_and_the_file_uplink_is_the_default() -> None:
    config = parse_config(BASE)
    assert config.windows.window == 60 and config.windows.grace == 10.0
    assert [(u.type, u.name) for u in config.uplinks] == [("file", "file")]
    assert config.drivers[0].name == "replay"


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"windows": {"window": 0}}, "windows.window: expected a whole number >= 1 and <= 86400, found 0"),
        ({"windows": {"grace": "ten"}}, "windows.grace: expected a number >= 0 and <= 3600, found 'ten'"),
        ({"windows": {"windoww": 60}}, "windows.windoww: unknown key"),
        ({"outbox": {"max_bytes": 10}}, "outbox.max_bytes: expected a whole number >= 65536, found 10"),
        ({"outbox": {"max_bytes": 100 * 1024}}, "outbox.max_bytes: expected at least 128,000 bytes (4 ticks of "
         "full batches of 500 records at up to 64 bytes each), found 102,400"),
        ({"gateway": {"id": "bad id!"}}, "gateway.id: expected 1 to 64 letters, digits"),
        ({"log": {"level": "loud"}}, 'log.level: expected one of "debug", "error", "info", "warning", found \'loud\''),
        ({"health": {"listen": "nowhere"}}, "health.listen: expected host:port"),
    ],
)
def test_bad_values_name_path_expectation_and_finding(patch: dict, expected: str) -> None:
    raw = {**BASE, **{k: {**BASE.get(k, {}), **v} for k, v in patch.items()}}
    found = problems(raw)
    assert any(expected in p for p in found), found


def test_driver_and_uplink_tables_are_validated_by_their_own_config() -> None:
    raw = {
        **BASE,
        "drivers": [{"type": "replay", "path": "a.csv", "speed": -1}, {"type": "nope"}],
        "uplinks": [{"type": "file", "rotate_bytes": 1}],
    }
    found = problems(raw)
    assert any(p.startswith("drivers[0].speed: expected a number >= 0") and p.endswith("found -1") for p in found), found
    assert any(p.startswith("drivers[1].type: expected one of") and "'nope'" in p for p in found), found
    assert any(p.startswith("uplinks[0].rotate_bytes: expected a whole number >= 4096, found 1") for p in found), found


def test_duplicate_names_and_cross_field_rules() -> None:
    raw = {**BASE, "drivers": [{"type": "replay", "path": "a.csv"}, {"type": "replay", "path": "b.txt"}]}
    found = problems(raw)
    assert any("drivers[1].name: expected a unique name" in p for p in found), found
    assert any("drivers[1].path: expected a .jsonl or .csv file" in p for p in found), found


@pytest.mark.parametrize("name", ["gateway.example.toml", "demo.toml"])
def test_shipped_configs_are_valid(name: str) -> None:
    load_config(ROOT / "config" / name)


def test_example_config_shows_every_key_of_every_section() -> None:
    from gateway import config as cfg

    text = (ROOT / "config" / "gateway.example.toml").read_text()
    example = tomllib.loads(text)
    for section, struct in (("gateway", cfg.GatewaySection), ("windows", cfg.WindowsSection),
                            ("outbox", cfg.OutboxSection), ("health", cfg.HealthSection),
                            ("log", cfg.LogSection), ("runtime", cfg.RuntimeSection)):
        assert set(example[section]) == set(struct.__struct_fields__), section


def test_check_config_exits_2_listing_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nid = "gw"\n[windows]\nwindow = -5\nbogus = 1\n[[drivers]]\ntype = "replay"\npath = "x.csv"\n')
    assert cli_main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "windows" in err and "found" in err
    assert cli_main(["check-config", str(ROOT / "config" / "demo.toml")]) == 0
    assert "config" in capsys.readouterr().out


def test_check_config_on_unparseable_toml_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[gateway\n")
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(broken)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not valid TOML" in result.stderr and "broken.toml" in result.stderr


@pytest.mark.parametrize(("content", "message"), [
    (b'[gateway]\nid = "g', "not valid TOML"),  # cut short
    (b"\xff\xfe not text", "not UTF-8 text (byte 0)"),
    (b"# " + b"x" * (1024 * 1024), "too large (more than 1,048,576 bytes"),
])
def test_a_broken_config_file_says_why_and_changes_nothing(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert len(caught.value.problems) == 1 and message in caught.value.problems[0], caught.value.problems
