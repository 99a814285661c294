"""Failure actions: what the VM does when it cannot get its key.

``prompt`` leaves the system's normal passphrase prompt (boot mode: exit non-zero so
cryptroot / systemd-cryptsetup asks; keyscript mode: run askpass and pass its answer
through). ``poweroff`` and ``reboot`` run a configured command, so tests observe them
by configuring a recording command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tdx_boot_attest.agent.config import Config, FailureAction
from tdx_boot_attest.agent.errors import ActionError

Runner = Callable[[Sequence[str]], int]


def run_command(argv: Sequence[str]) -> int:
    """Run ``argv`` with inherited stdio and return its exit status; raises OSError."""
    import subprocess

    return subprocess.run(list(argv), check=False).returncode


@dataclass
class FailureActions:
    """Carries out the configured failure action with an injectable command runner."""

    config: Config
    runner: Runner = run_command

    def command_for(self, action: FailureAction) -> tuple[str, ...] | None:
        """The command ``action`` runs (None for prompt). Raises nothing."""
        if action is FailureAction.POWEROFF:
            return self.config.poweroff_command
        if action is FailureAction.REBOOT:
            return self.config.reboot_command
        return None

    def run(self, action: FailureAction | None = None) -> None:
        """Run ``action`` (default: the configured one); raises ActionError if it fails."""
        command = self.command_for(action or self.config.on_failure)
        if command is None:
            return
        try:
            status = self.runner(command)
        except OSError as exc:
            raise ActionError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
        if status != 0:
            raise ActionError(f"{' '.join(command)} exited with status {status}")

    def ask_passphrase(self, volume: str) -> int:
        """Keyscript fallback: run askpass, whose stdout (the typed passphrase) is ours.

        Returns askpass's exit status; raises ActionError when it cannot be run.
        """
        prompt = f"Attestation failed. Please unlock disk {volume}: "
        try:
            return self.runner([*self.config.askpass_command, prompt])
        except OSError as exc:
            raise ActionError(
                f"cannot run {self.config.askpass_command[0]}: {exc.strerror or exc}"
            ) from None
