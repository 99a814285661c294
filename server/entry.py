"""The ``tdx-attest-server`` console script: checks the ``server`` extra, then runs the CLI."""

from __future__ import annotations

import sys

from tdx_boot_attest.agent.package_info import require_extra


def main() -> int:
    """Run ``tdx-attest-server``; exits 1 with the pip command when the extra is missing.

    Raises nothing for missing dependencies (the CLI's own errors are handled there).
    """
    argv = sys.argv[1:]
    status = require_extra("tdx-attest-server", "server", argv)
    if status is not None:
        return status
    # Imported only now: the CLI imports SQLAlchemy, FastAPI, ... at module level.
    from tdx_boot_attest.server.cli import main as cli_main

    return cli_main(argv)
