"""Start ThingsBoard IoT Gateway (3.8.x) for `benchmarks.peer`, with no traffic leaving the machine.

Runs under the separate peer venv's interpreter (`python -I tb_launcher.py`), never imported by
edge-gateway. Its config folder comes from TB_GW_CONFIG_DIR (as its own `daemon()` reads it).

Read from the installed 3.8.5 source:
- `TBGatewayService.__init__` always builds a `TBUpdater`, whose constructor starts a thread that
  POSTs the version, platform and an instance id to its update service; no config key turns that
  off. So the check is replaced here by a no-op before the service is imported.
- Several code paths call `TBUtility.install_package` (pip) when a module is missing; here that
  refuses instead, so a missing module shows up as an error rather than as a download.
"""

import os
import sys

from thingsboard_gateway.tb_utility import tb_updater
from thingsboard_gateway.tb_utility.tb_utility import TBUtility


def _no_update_check(self: object) -> None:
    print("peer benchmark: update check disabled", file=sys.stderr)


def _no_install(*args: object, **kwargs: object) -> None:
    raise RuntimeError(f"peer benchmark: package installs are disabled (asked for {args!r})")


tb_updater.TBUpdater.check_for_new_version = _no_update_check
TBUtility.install_package = staticmethod(_no_install)

if __name__ == "__main__":
    if not os.environ.get("TB_GW_CONFIG_DIR"):
        sys.exit("TB_GW_CONFIG_DIR is not set")
    from thingsboard_gateway.tb_gateway import daemon

    daemon()
