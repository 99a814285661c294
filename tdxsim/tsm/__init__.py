"""A simulated configfs-tsm device (Linux /sys/kernel/config/tsm) for a TDX guest.

:mod:`~tdxsim.tsm.model` is the state machine, :mod:`~tdxsim.tsm.configfs` the file layer,
:mod:`~tdxsim.tsm.dirfake` a directory fake for unit tests and :mod:`~tdxsim.tsm.fuse` a
real FUSE mount that any program can use.
"""

from tdx_boot_attest.tdxsim.tsm.errors import TsmError
from tdx_boot_attest.tdxsim.tsm.faults import FaultPlan, FaultSpecError
from tdx_boot_attest.tdxsim.tsm.model import KernelAbi, QuoteFn, TsmModel

__all__ = ["FaultPlan", "FaultSpecError", "KernelAbi", "QuoteFn", "TsmError", "TsmModel"]
