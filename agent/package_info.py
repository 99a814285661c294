"""What the installed distribution says about itself: its version and its extras.

Every console script uses this before importing anything an extra provides, so a command
started without its extra names the extra to install instead of dying in an import.
Only the standard library is imported here.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

from tdx_boot_attest.agent import __version__ as SOURCE_VERSION

DISTRIBUTION = "tdx-boot-attest"
# "fastapi<1,>=0.115; extra == \"server\"": the distribution name and the extra it belongs to.
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def version() -> str:
    """The installed distribution's version (the source tree's when not installed).

    Raises nothing.
    """
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return SOURCE_VERSION


def version_line(prog: str) -> str:
    """``PROG VERSION (Python X.Y.Z)`` for ``--version``. Raises nothing."""
    python = ".".join(str(part) for part in sys.version_info[:3])
    return f"{prog} {version()} (Python {python})"


def extra_requirements(extra: str) -> list[str]:
    """The distribution names an extra requires, from the installed metadata.

    An uninstalled source tree has no metadata: the list is then empty. Raises nothing.
    """
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    names: list[str] = []
    for requirement in requirements:
        requirement_part, _, marker = requirement.partition(";")
        extra_match = _EXTRA_MARKER.search(marker)
        name_match = _REQUIREMENT.match(requirement_part)
        if extra_match and name_match and extra_match.group(1) == extra:
            names.append(name_match.group(1))
    return names


def missing_for_extra(extra: str) -> list[str]:
    """The distributions of ``extra`` that are not installed (empty: all there).

    Raises nothing.
    """
    missing = []
    for name in extra_requirements(extra):
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra``. Raises nothing."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def require_extra(prog: str, extra: str, argv: list[str]) -> int | None:
    """Check that ``extra`` is installed before ``prog`` imports it.

    Returns None when everything is there; otherwise prints what is missing and the
    command that installs it (or the version, for ``--version``) and returns the exit
    status. Raises nothing.
    """
    missing = missing_for_extra(extra)
    if not missing:
        return None
    if argv[:1] == ["--version"]:
        print(version_line(prog))
        return 0
    print(
        f"{prog}: the '{extra}' extra is not installed (missing: {', '.join(missing)}); "
        f"install it with: {install_hint(extra)}",
        file=sys.stderr,
    )
    return 1
