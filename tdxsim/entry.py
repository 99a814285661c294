"""The ``tdxsim`` console script: checks the ``sim`` extra, then runs the CLI."""

from __future__ import annotations

import sys

from tdx_boot_attest.agent.package_info import require_extra


def main() -> int:
    """Run ``tdxsim``; exits 1 with the pip command when the ``sim`` extra is missing.

    Raises nothing for missing dependencies (the CLI's own errors are handled there).
    """
    argv = sys.argv[1:]
    status = require_extra("tdxsim", "sim", argv)
    if status is not None:
        return status
    from tdx_boot_attest.tdxsim.cli import main as cli_main

    return cli_main(argv)
