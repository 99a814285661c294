"""Run every benchmark script in bench/ in turn; each prints its figures and one JSON line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    """Run the benchmarks; returns the number of scripts that failed. Raises nothing."""
    here = Path(__file__).resolve().parent
    failed = 0
    for script in sorted(here.glob("*.py")):
        if script.name == Path(__file__).name or script.name.startswith("_"):
            continue
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            print(f"== {script.name} FAILED", flush=True)
            failed += 1
    return failed


if __name__ == "__main__":
    sys.exit(main())
