"""``python -m tdxsim``: the same as the ``tdxsim`` command."""

import sys

from tdxsim.cli import main

sys.exit(main())
