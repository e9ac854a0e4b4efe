"""A clean Debian 12 root made with debootstrap, cached between runs, for installing the .deb.

The pristine root (minbase: Essential + apt, nothing else) is made once per architecture under
/var/cache/edge-gateway-test; the packages the gateway's package depends on are downloaded into
its apt cache but not installed, so each run copies the root and installs the .deb with apt
exactly as on a fresh box, without fetching anything again.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

__all__ = ["CACHE", "MirrorUnreachable", "chroot", "debian_mirror", "pristine_root"]

CACHE = Path(os.environ.get("EDGE_GATEWAY_TEST_CACHE", "/var/cache/edge-gateway-test"))
SUITE = "bookworm"
# Downloaded while the root is made: what `Depends:` of the package pulls in on minbase.
PREFETCH = ("python3", "adduser")
_DEFAULT_MIRROR = "http://deb.debian.org/debian"


class MirrorUnreachable(Exception):
    """No Debian mirror answers: the test skips with this reason."""


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian archive URL apt is configured with (deb822 or one-line sources)."""
    texts = []
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]:
        if path.is_file() and path.suffix in ("", ".list", ".sources"):
            texts.append(path.read_text(errors="replace"))
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            if re.search(rf"^Suites:.*\b{SUITE}\b", stanza, re.M) and not re.search(
                r"^Enabled:\s*no", stanza, re.M
            ):
                for uri in re.findall(r"^URIs:\s*(.+)$", stanza, re.M):
                    for url in uri.split():
                        if url.rstrip("/").endswith("/debian"):
                            return url.rstrip("/")
        for url in re.findall(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s+{SUITE}\s", text, re.M):
            return url
    return _DEFAULT_MIRROR


def _reachable(mirror: str) -> None:
    try:
        with urllib.request.urlopen(f"{mirror}/dists/{SUITE}/Release", timeout=30) as answer:
            answer.read(64)
    except OSError as error:
        raise MirrorUnreachable(f"Debian mirror {mirror} not reachable ({error})") from None


def chroot(
    root: Path, *command: str, network: bool = True, options: tuple[str, ...] = (),
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a command in `root` with its own /proc (a private mount namespace, gone with the
    command); without `network`, in an empty network namespace with only loopback up.
    `options` go to chroot(8), e.g. --userspec=UID:GID."""
    inner = 'exec chroot "$@"'
    prefix = ["unshare", "--mount", "--pid", "--fork", f"--mount-proc={root}/proc"]
    if not network:
        prefix.append("--net")
        inner = "ip link set lo up && " + inner
    return subprocess.run(
        [*prefix, "sh", "-c", inner, "sh", *options, str(root), *command],
        capture_output=True, text=True, check=False, timeout=timeout,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
             "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"},
    )


def pristine_root(arch: str, log: Path) -> Path:
    """The cached clean root for `arch`, made now if missing. Raises MirrorUnreachable."""
    CACHE.mkdir(parents=True, exist_ok=True)
    # Two test runs at once (two worktrees) make the root once: the second waits here.
    with open(CACHE / f".lock-{SUITE}-{arch}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _pristine_root(arch, log)


def _pristine_root(arch: str, log: Path) -> Path:
    home = CACHE / f"{SUITE}-{arch}"
    root = home / "root"
    mirror = debian_mirror()
    recipe = f"{mirror} {SUITE} {arch} minbase; prefetched {' '.join(PREFETCH)}\n"
    ready = home / "ready"
    if ready.is_file() and ready.read_text() == recipe:
        return root
    _reachable(mirror)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    building = home / "root.partial"
    with open(log, "a") as out:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--arch={arch}", SUITE, str(building), mirror],
            stdout=out, stderr=subprocess.STDOUT, check=True, timeout=1800,
        )
        for command in (("apt-get", "clean"), ("apt-get", "update", "-qq"),
                        ("apt-get", "install", "-y", "-qq", "--download-only", *PREFETCH)):
            done = chroot(building, *command, timeout=900)
            out.write(done.stdout + done.stderr)
            done.check_returncode()
    building.rename(root)
    ready.write_text(recipe)
    return root
