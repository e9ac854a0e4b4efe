"""`make deb` builds a package that installs into a clean Debian 12 root and runs from there.

The root is made with debootstrap and cached (tests/packaging/debian_root.py); the package is
installed offline with apt, as a technician would install it on a box, and the installed gateway
checks the shipped config and runs the embedded default (replay into the file uplink) as the
service user, in a network namespace of its own (loopback only: nothing is fetched at run time
either, and the metrics port cannot collide with a gateway running on this machine).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.packaging.debian_root import MirrorUnreachable, chroot, pristine_root
from tests.support.batches import read_batches

ROOT = Path(__file__).resolve().parents[2]
USER = "edge-gateway"


def _ids(root: Path) -> tuple[dict[str, int], dict[str, tuple[int, set[str]]]]:
    """Users (name -> uid) and groups (name -> gid, members) of the installed root."""
    users = {line.split(":")[0]: int(line.split(":")[2])
             for line in (root / "etc/passwd").read_text().splitlines() if line}
    groups = {}
    for line in (root / "etc/group").read_text().splitlines():
        if line:
            name, _, gid, members = line.split(":")
            groups[name] = (int(gid), set(filter(None, members.split(","))))
    return users, groups


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_the_package_installs_into_a_clean_debian_12_and_runs(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("debootstrap, chroot and dpkg need root")
    timings: dict[str, float] = {}
    started = time.monotonic()
    built = subprocess.run(["make", "--no-print-directory", "deb", f"DEB_OUT={tmp_path / 'out'}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stdout + built.stderr
    (deb,) = (tmp_path / "out").glob("edge-gateway_*.deb")
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert deb.name.endswith(f"_{arch}.deb")
    timings["make deb"] = time.monotonic() - started

    mark = time.monotonic()
    try:
        pristine = pristine_root(arch, tmp_path / "debootstrap.log")
    except MirrorUnreachable as reason:
        pytest.skip(str(reason))
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(pristine), str(root)], check=True)
    timings["clean root (cached or made)"] = time.monotonic() - mark

    # Install offline: every dependency was downloaded when the root was made, none installed.
    mark = time.monotonic()
    assert not (root / "usr/bin/python3").exists(), "the root is not clean"
    shutil.copy(deb, root / "tmp" / deb.name)
    # dpkg unpacks, apt adds the dependencies and configures. (`apt-get install ./x.deb` would
    # be one step, but apt 2.6 loses the path when python3-minimal is configured on the way:
    # "Internal Error, Pathname to install is not absolute".)
    _ok(chroot(root, "dpkg", "--unpack", f"/tmp/{deb.name}", network=False))
    installed = _ok(chroot(root, "apt-get", "install", "-f", "-y", "--no-download", network=False))
    timings["apt-get install"] = time.monotonic() - mark
    assert "Setting up edge-gateway" in installed
    query = chroot(root, "dpkg-query", "-W", "-f=${Status} ${Conffiles}", "edge-gateway")
    assert _ok(query).split()[:4] == ["install", "ok", "installed", "/etc/edge-gateway/gateway.toml"]

    users, groups = _ids(root)
    uid, gid = users[USER], groups[USER][0]
    assert uid < 1000, "a system user"
    assert USER in groups["dialout"][1] and USER in groups["bluetooth"][1]
    config = (root / "etc/edge-gateway/gateway.toml").stat()
    assert (stat.S_IMODE(config.st_mode), config.st_uid, config.st_gid) == (0o640, 0, gid)
    confdir = (root / "etc/edge-gateway").stat()
    assert (stat.S_IMODE(confdir.st_mode), confdir.st_uid, confdir.st_gid) == (0o750, 0, gid)
    state = (root / "var/lib/edge-gateway").stat()
    assert (stat.S_IMODE(state.st_mode), state.st_uid, state.st_gid) == (0o750, uid, gid)
    assert (root / "lib/systemd/system/edge-gateway.service").is_file()

    as_service = ("--userspec", f"{uid}:{gid}",
                  "--groups", f"{groups['dialout'][0]},{groups['bluetooth'][0]}")
    mark = time.monotonic()
    checked = _ok(chroot(root, "/usr/bin/edge-gateway", "check-config",
                         "/etc/edge-gateway/gateway.toml", network=False, options=as_service))
    assert checked.splitlines()[0] == "config /etc/edge-gateway/gateway.toml: OK"
    # The embedded default, as the service user in its state directory: a recorded day of city
    # data replayed into the file uplink.
    ran = chroot(root, "sh", "-c", "cd /var/lib/edge-gateway && exec /opt/edge-gateway/.venv/bin/"
                 "edge-gateway run --duration 10 --drain --summary",
                 network=False, options=as_service, timeout=300)
    timings["check-config + 10 s run"] = time.monotonic() - mark
    summary = _ok(ran)
    assert "edge-gateway run summary" in summary
    outputs = list((root / "var/lib/edge-gateway/edge-gateway-state/batches").iterdir())
    assert outputs, summary
    batches = [batch for path in outputs for batch in read_batches(path)]
    assert batches and {b.gateway for b in batches} == {"edge-demo"}
    windows = sum(len(b.windows) for b in batches)
    # a lower bound: how much of the recorded day 10 s replay as the service user is the
    # machine's pace; the exact checks are the summary's figures against the file, below
    assert windows > 0
    # every batch written reached the file, every closed window is in one
    assert re.search(rf"batches written +{len(batches)}\n", summary), summary
    assert re.search(rf"forwarded +file: {len(batches)} batches /", summary), summary
    assert re.search(rf"windows closed +{windows:,}\n", summary), summary
    assert re.search(r"still in the outbox +0 batches", summary), summary
    assert all(path.stat().st_uid == uid for path in outputs)

    # Purge leaves nothing of the package behind (the byte code was shipped, not made here).
    mark = time.monotonic()
    _ok(chroot(root, "apt-get", "purge", "-y", "edge-gateway", network=False))
    timings["apt-get purge"] = time.monotonic() - mark
    for gone in ("opt/edge-gateway", "etc/edge-gateway", "var/lib/edge-gateway",
                 "usr/bin/edge-gateway", "lib/systemd/system/edge-gateway.service"):
        assert not (root / gone).exists() and not (root / gone).is_symlink(), gone
    timings["total"] = time.monotonic() - started
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    shutil.rmtree(root)
