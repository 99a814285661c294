"""``python -m agent``: the same as the ``tdx-boot-agent`` console script."""

import sys

from tdx_boot_attest.agent.cli import main

sys.exit(main())
