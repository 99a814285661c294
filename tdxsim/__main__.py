"""``python -m tdxsim``: the same as the ``tdxsim`` command."""

import sys

from tdx_boot_attest.tdxsim.cli import main

sys.exit(main())
