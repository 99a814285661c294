"""The documents say what the code does: step numbers, accepted TCB statuses, reasons."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.boot import attestation as boot_attestation
from tdx_boot_attest.server.settings import TCB_STATUSES

DOCS = Path(__file__).resolve().parents[2] / "docs"
# What each numbered step of docs/protocol.md is about, by a word its text must contain.
STEP_WORDS = {
    1: "nonce",
    2: "public_key",
    3: "quote",
    4: "collateral",
    5: "images",
    6: "dcap-qvl",
    7: "TCB status",
    8: "debug",
    9: "matches",
    10: "REPORTDATA",
    11: "seals",
}


def _protocol_steps() -> dict[int, str]:
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    section = text.split("The server then, in this order", 1)[1].split("\n\n", 2)[1]
    items = re.split(r"^(\d+)\. ", section, flags=re.M)[1:]
    return {int(number): body for number, body in zip(items[::2], items[1::2], strict=True)}


def test_the_code_numbers_its_steps_as_protocol_md_does() -> None:
    steps = _protocol_steps()
    assert sorted(steps) == list(range(1, 13))
    names = [name for name, _ in inspect.getmembers(boot_attestation, inspect.isfunction)]
    numbered = {int(m.group(1)): name for name in names if (m := re.match(r"_step(\d+)_", name))}
    assert sorted(numbered) == sorted(STEP_WORDS)
    for number, word in STEP_WORDS.items():
        assert word in steps[number], (number, numbered[number])
    assert "check_report_data" in numbered[10]
    assert "release_key" in numbered[11]


def test_every_accepted_tcb_status_is_documented() -> None:
    text = (DOCS / "server.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `allowed_tcb_statuses`"))
    for status in TCB_STATUSES:
        assert f"`{status}`" in row, status


def test_config_invalid_is_documented_where_reasons_are_listed() -> None:
    assert Reason.CONFIG_INVALID.value == "config_invalid"
    for name in ("server.md", "protocol.md", "agent.md"):
        assert "`config_invalid`" in (DOCS / name).read_text(encoding="utf-8"), name
