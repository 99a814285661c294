"""What the three console scripts share about their process: the closed-pipe exit.

Standard library only, so the verifier's and the simulator's commands may import it
(docs/architecture.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Final

# The status a shell reports for a process SIGPIPE ended (128 + 13).
EXIT_BROKEN_PIPE: Final = 141


def stdout_closed() -> int:
    """Finish quietly after the reader of standard output went away (``... | head -1``).

    Unix tools die of SIGPIPE there, without a message, and the shell reports 141
    (128 + SIGPIPE); this returns that status. Standard output is pointed at /dev/null
    so the interpreter's final flush does not print an error. Raises nothing.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def run_command(command: Callable[[], int]) -> int:
    """Run a console script's ``command`` and return its exit status, or 141 (quietly)
    when the reader of standard output went away. Raises what ``command`` raises, except
    BrokenPipeError.
    """
    try:
        try:
            return command()
        finally:
            # A reader that went away is found here, not in the interpreter's final flush.
            sys.stdout.flush()
    except BrokenPipeError:
        return stdout_closed()
