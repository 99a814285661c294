"""List the files an initramfs needs to run the agent: its venv, Python and stdlib subset.

Run with the installed virtual environment's own interpreter, from an initramfs hook::

    /opt/tdx-boot-attest/bin/python tdx_runtime_files.py --venv /opt/tdx-boot-attest

Prints one ``KIND<TAB>SOURCE<TAB>TARGET`` line per file, where KIND is ``exec`` (an ELF
file whose shared libraries must come along: copy it with ``copy_exec``), ``file``
(a plain copy) or ``link`` (TARGET is a symbolic link to SOURCE). SOURCE is where the
file is on this machine; TARGET is where it goes in the image (they differ when the venv
was installed under a staging DESTDIR). With ``--copy-into DESTDIR`` the script copies
the plain files and makes the links itself (one process instead of a thousand shell
copies) and lists only the executables, which the image tool copies with their
libraries.

Which standard-library modules come along is decided twice and the answers joined: a
static import walk (ModuleFinder, which also follows imports inside functions) from the
entry modules (by default every module of the agent package), and the set a real
interpreter has loaded after importing them (which covers what the interpreter imports
by itself at start-up). Development-only parts of the stdlib are left out.
Exits 1 with a message on stderr when something the image needs is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from modulefinder import ModuleFinder
from pathlib import Path

# site-packages entries that are tooling, not the agent's runtime: top-level names, or
# paths below site-packages (the verifier and simulator beside the agent in its namespace).
DEFAULT_SKIP = (
    "pip",
    "setuptools",
    "_distutils_hack",
    "pkg_resources",
    "wheel",
    "tdx_boot_attest/server",
    "tdx_boot_attest/tdxsim",
)
# Where the agent's package sits below site-packages.
AGENT_PACKAGE = Path("tdx_boot_attest") / "agent"
# Imported by the interpreter or by codecs lookups that no static walk can see.
ALWAYS_STDLIB = ("encodings", "site", "sitecustomize", "_sitebuiltins", "runpy", "importlib.util")
# Development and GUI parts of the stdlib that static walks reach through optional imports
# but that nothing run at boot uses; leaving them out keeps megabytes out of the image.
NEVER_STDLIB = (
    "test",
    "unittest",
    "doctest",
    "pdb",
    "pydoc",
    "pydoc_data",
    "idlelib",
    "tkinter",
    "turtle",
    "lib2to3",
    "ensurepip",
    "distutils",
    "_testcapi",
    "_testinternalcapi",
    "_testbuffer",
    "_testmultiphase",
    "sqlite3",
    "_sqlite3",
    "curses",
    "_curses",
    "readline",
    "venv",
    "xmlrpc",
    "tabnanny",
    "pstats",
    "cProfile",
    "profile",
)
# Shared libraries loaded with ctypes at run time (no ELF dependency names them).
DEFAULT_CTYPES_LIBS = ("libudev.so.1",)
# ctypes.util.find_library asks ldconfig for the library cache.
HELPER_EXECUTABLES = ("/sbin/ldconfig",)


class RuntimeFilesError(Exception):
    """Something the image needs is missing or unusable."""


def main(argv: list[str] | None = None) -> int:
    """Print the file list; returns 0, or 1 after a message when something is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, required=True, help="the venv on this machine")
    parser.add_argument(
        "--target", type=Path, help="the venv's path in the image (default: --venv)"
    )
    parser.add_argument("--entry", action="append", default=[], help="entry module (repeatable)")
    parser.add_argument(
        "--skip", action="append", default=[], help="site-packages entry to leave out"
    )
    parser.add_argument(
        "--extra-path",
        action="append",
        default=[],
        type=Path,
        help="a directory of extra modules to carry (test images)",
    )
    parser.add_argument("--extra-target", type=Path, help="where --extra-path dirs go in the image")
    parser.add_argument("--config", type=Path, help="agent.conf: its CA bundle comes along")
    parser.add_argument(
        "--copy-into",
        type=Path,
        metavar="DESTDIR",
        help="copy the plain files into this image tree and list only the executables",
    )
    parser.add_argument(
        "--ctypes-lib", action="append", default=[], help="soname loaded via ctypes"
    )
    parser.add_argument(
        "--with-libraries",
        action="store_true",
        help="also list the shared libraries of every executable (for dracut, whose lazy "
        "dependency pass skips non-executable extension modules)",
    )
    args = parser.parse_args(argv)
    target = args.target or args.venv
    try:
        site = _site_packages(args.venv)
        entries = args.entry or _package_modules(site / AGENT_PACKAGE, site)
        listed: set[Path] = set()
        for kind, source, dest in runtime_files(
            venv=args.venv,
            target=target,
            entries=entries,
            skip=(*DEFAULT_SKIP, *args.skip),
            extra_paths=args.extra_path,
            extra_target=args.extra_target,
            ctypes_libs=(*DEFAULT_CTYPES_LIBS, *args.ctypes_lib),
            config=args.config,
        ):
            if kind == "file" and args.copy_into is not None:
                copy_into(args.copy_into, source, dest)
                continue
            if kind == "link" and args.copy_into is not None:
                link_into(args.copy_into, source, dest)
                continue
            for path in (source, dest):
                if any(ch.isspace() for ch in str(path)):
                    raise RuntimeFilesError(f"path with white space cannot be listed: {path}")
            print(f"{kind}\t{source}\t{dest}")
            if kind == "exec" and args.with_libraries:
                for library in shared_libraries(source):
                    if library not in listed:
                        listed.add(library)
                        print(f"exec\t{library}\t{library}")
    except RuntimeFilesError as exc:
        print(f"tdx-boot-attest: {exc}", file=sys.stderr)
        return 1
    return 0


def runtime_files(
    *,
    venv: Path,
    target: Path,
    entries: list[str],
    skip: Iterable[str],
    extra_paths: list[Path],
    extra_target: Path | None,
    ctypes_libs: Iterable[str],
    config: Path | None = None,
) -> Iterator[tuple[str, Path, Path]]:
    """Yield (kind, source, target) for every file the image needs. Raises RuntimeFilesError."""
    site = _site_packages(venv)
    skipped = {name for name in skip if "/" not in name}
    skipped_paths = tuple(name for name in skip if "/" in name)
    yield "file", venv / "pyvenv.cfg", target / "pyvenv.cfg"
    # The venv's python is a link to the system interpreter; the image gets the same
    # link (to the real file, not through the build machine's staging path).
    interpreter = (venv / "bin" / "python").resolve()
    yield "exec", interpreter, interpreter
    yield "link", interpreter, target / "bin" / "python"
    for script in sorted((venv / "bin").glob("tdx-boot-agent*")):
        yield "file", script, target / script.relative_to(venv)

    for entry in sorted(site.iterdir()):
        if entry.name.split(".")[0].split("-")[0] in skipped or entry.name == "__pycache__":
            continue
        if entry.name.endswith(".pth"):
            continue
        for file in _tree(entry):
            inside = file.relative_to(site).as_posix()
            if any(inside.startswith(path + "/") for path in skipped_paths):
                continue
            yield _kind(file), file, target / file.relative_to(venv)
    for extra in extra_paths:
        if extra_target is None:
            raise RuntimeFilesError("--extra-path needs --extra-target")
        for file in _tree(extra):
            yield _kind(file), file, extra_target / file.relative_to(extra.parent)

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    modules = _stdlib_modules(entries, extra_paths)
    for file in sorted(_stdlib_files(modules, stdlib)):
        yield _kind(file), file, file
    for soname in ctypes_libs:
        path = _find_library(soname)
        yield "exec", path, path
    for helper in HELPER_EXECUTABLES:
        if not Path(helper).is_file():
            raise RuntimeFilesError(f"{helper} is missing")
        yield "exec", Path(helper), Path(helper)
    if config is not None:
        bundle = _ca_bundle(config)
        if bundle is not None:
            yield "file", bundle, bundle


def shared_libraries(path: Path) -> list[Path]:
    """The shared libraries ``path`` loads, resolved by ldd. Raises RuntimeFilesError."""
    result = subprocess.run(
        ["ldd", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        if "not a dynamic executable" in result.stdout + result.stderr:
            return []
        raise RuntimeFilesError(f"ldd {path} failed: {result.stderr.strip()}")
    libraries = []
    for line in result.stdout.splitlines():
        if "not found" in line:
            raise RuntimeFilesError(f"{path} needs a library that is missing: {line.strip()}")
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1:
            candidate = words[words.index("=>") + 1]
        elif words and words[0].startswith("/"):
            candidate = words[0]
        else:
            continue
        if candidate.startswith("/"):
            libraries.append(Path(candidate))
    return libraries


def copy_into(destdir: Path, source: Path, dest: Path) -> None:
    """Copy ``source`` to ``destdir/dest`` (content, mode and mtime; links followed).

    An existing target is left alone, as the image tools do. Bytecode stays valid
    because the sources keep their mtimes. Raises RuntimeFilesError.
    """
    target = destdir / dest.relative_to(dest.anchor)
    if target.exists():
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    except OSError as exc:
        raise RuntimeFilesError(f"cannot copy {source} into the image: {exc}") from None


def link_into(destdir: Path, source: Path, dest: Path) -> None:
    """Make ``destdir/dest`` a symbolic link to the absolute path ``source``.

    Raises RuntimeFilesError.
    """
    target = destdir / dest.relative_to(dest.anchor)
    if target.is_symlink() or target.exists():
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source)
    except OSError as exc:
        raise RuntimeFilesError(f"cannot link {dest} in the image: {exc}") from None


def _ca_bundle(config: Path) -> Path | None:
    """Validate agent.conf with the agent's own loader; return its CA bundle path or None.

    Raises RuntimeFilesError naming the bad key: a bad configuration fails the image
    build rather than the boot.
    """
    from tdx_boot_attest.agent.config import load_config
    from tdx_boot_attest.agent.errors import ConfigError

    try:
        loaded = load_config(config, None, require_file=True)
    except ConfigError as exc:
        raise RuntimeFilesError(f"invalid configuration: {exc}") from None
    return loaded.ca_bundle


def _site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = venv / "lib" / version / "site-packages"
    if not (venv / "pyvenv.cfg").is_file() or not site.is_dir():
        raise RuntimeFilesError(f"{venv} is not a {version} virtual environment")
    if not (site / AGENT_PACKAGE / "__init__.py").is_file():
        raise RuntimeFilesError(f"the agent is not installed in {venv}")
    return site


def _package_modules(package: Path, site: Path) -> list[str]:
    """Dotted names of every module of ``package`` (below ``site``): lazy imports all get
    looked at."""
    names = []
    for file in _tree(package):
        if file.suffix == ".py":
            parts = list(file.relative_to(site).with_suffix("").parts)
            if parts[-1] == "__main__":
                continue  # importing it would run the program
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join(parts))
    return names


def _tree(entry: Path) -> Iterator[Path]:
    if entry.is_file():
        yield entry
        return
    for root, dirs, files in os.walk(entry):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def _kind(path: Path) -> str:
    with path.open("rb") as handle:
        return "exec" if handle.read(4) == b"\x7fELF" else "file"


def _stdlib_modules(entries: list[str], extra_paths: list[Path]) -> set[str]:
    search = [str(p.parent) for p in extra_paths] + sys.path
    finder = ModuleFinder(path=search)
    _register_namespace_packages(finder, entries, search)
    for name in (*entries, *ALWAYS_STDLIB):
        try:
            finder.import_hook(name)
        except (ImportError, SyntaxError):
            continue  # optional imports of optional platforms; the live run below decides
        except AttributeError as exc:
            # ModuleFinder's symptom of a package it cannot load: a silent skip here would
            # leave the lazily imported modules out of the image.
            raise RuntimeFilesError(f"cannot walk the imports of {name}: {exc}") from None
    found = set(finder.modules)
    found |= _loaded_modules(entries, [str(p.parent) for p in extra_paths])
    return found


def _register_namespace_packages(
    finder: ModuleFinder, entries: list[str], search: list[str]
) -> None:
    """Tell ``finder`` where the namespace packages above ``entries`` live.

    ModuleFinder cannot load a package without ``__init__.py`` (tdx_boot_attest is one):
    it fails on the first import through it, and the agent's lazy imports (requests and
    what requests needs from the stdlib) would then never be walked.
    """
    heads = {name.split(".")[0] for name in entries if "." in name}
    for head in sorted(heads):
        parts = [
            str(Path(root) / head)
            for root in search
            if (Path(root) / head).is_dir() and not (Path(root) / head / "__init__.py").exists()
        ]
        if parts:
            finder.add_module(head).__path__ = parts


def _loaded_modules(entries: list[str], extra: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = {extra!r}\n"
        f"for name in {entries!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeFilesError(f"cannot import {', '.join(entries)}: {result.stderr.strip()}")
    names: list[str] = json.loads(result.stdout)
    return set(names)


def _stdlib_files(modules: set[str], stdlib: Path) -> set[Path]:
    """The stdlib files (source, bytecode, extension) behind ``modules``, packages included."""
    files: set[Path] = {stdlib / "os.py"}  # the interpreter's landmark for finding its prefix
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None or spec.origin is None or not spec.has_location:
            continue
        if name.split(".")[0] in NEVER_STDLIB:
            continue
        origin = Path(spec.origin)
        if not _is_within(origin, stdlib) or "site-packages" in origin.parts:
            continue
        files.add(origin)
        if origin.suffix == ".py":
            cached = Path(importlib.util.cache_from_source(str(origin)))
            if cached.is_file():
                files.add(cached)
        if name == "encodings":
            files.update(p for p in _tree(origin.parent) if p.suffix in {".py", ".pyc"})
    for path in list(files):
        # Debian links sitecustomize.py into /etc; copy_file follows the link.
        if not path.exists():
            files.discard(path)
    return files


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _find_library(soname: str) -> Path:
    result = subprocess.run(
        ["ldconfig", "-p"], capture_output=True, text=True, check=False, timeout=30
    )
    for line in result.stdout.splitlines():
        name, _, rest = line.strip().partition(" ")
        if name == soname and "x86-64" in rest and "=>" in rest:
            return Path(rest.split("=>", 1)[1].strip())
    raise RuntimeFilesError(f"shared library {soname} not found (ldconfig -p)")


if __name__ == "__main__":
    sys.exit(main())
