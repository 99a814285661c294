"""agent.actions: what the agent runs when attestation fails."""

from __future__ import annotations

import pytest

from tdx_boot_attest.agent.actions import FailureActions
from tdx_boot_attest.agent.config import Config, FailureAction
from tdx_boot_attest.agent.errors import ActionError


def actions(
    on_failure: FailureAction, ran: list[tuple[str, ...]], status: int = 0
) -> FailureActions:
    config = Config(server_url="https://a", on_failure=on_failure)

    def runner(argv: object) -> int:
        ran.append(tuple(argv))  # type: ignore[arg-type]
        return status

    return FailureActions(config, runner)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (FailureAction.PROMPT, []),
        (FailureAction.POWEROFF, [("poweroff", "-f")]),
        (FailureAction.REBOOT, [("reboot", "-f")]),
    ],
)
def test_failure_actions_run_their_command(
    action: FailureAction, expected: list[tuple[str, ...]]
) -> None:
    ran: list[tuple[str, ...]] = []
    actions(action, ran).run()
    assert ran == expected


def test_failing_action_is_reported() -> None:
    with pytest.raises(ActionError, match="status 1"):
        actions(FailureAction.POWEROFF, [], status=1).run()


def test_missing_action_command_is_reported() -> None:
    def runner(argv: object) -> int:
        raise FileNotFoundError(2, "No such file or directory")

    config = Config(server_url="https://a", on_failure=FailureAction.REBOOT)
    with pytest.raises(ActionError, match="cannot run reboot"):
        FailureActions(config, runner).run()


def test_askpass_gets_a_prompt_naming_the_volume() -> None:
    ran: list[tuple[str, ...]] = []
    assert actions(FailureAction.PROMPT, ran).ask_passphrase("root") == 0
    assert ran == [("/lib/cryptsetup/askpass", "Attestation failed. Please unlock disk root: ")]
