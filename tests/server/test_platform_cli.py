"""Platforms in the database, and images registered from a measurement manifest alone.

``platform add/show/list`` store the profiles ``platform capture`` makes; ``image measure
--platform NAME`` reads them; ``image add --from-measurements`` registers an image with
its expected events and no golden quote. A boot whose quote and event log are what the
manifest predicts then unlocks, and a boot with a rebuilt initrd is refused naming
``Linux initrd`` (both on SQLite and PostgreSQL, over real HTTP).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, cast

import pytest

from tdx_boot_attest.agent.eventlog import encode_event_log
from tdx_boot_attest.agent.measurement.manifest import Manifest
from tdx_boot_attest.server.cli import main
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.agent.measurement.builders import ASSETS, bzimage
from tests.server.test_measure_cli import reference_quote
from tests.support.sim_server import sim_server

INITRD_LOG = ASSETS / "qemu-direct-boot-initrd.ccel"
CMDLINE = "console=ttyS0 root=/dev/mapper/root ro"


@pytest.fixture
def admin(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    key_file = tmp_path / "master.key"
    assert main(["master-key", "generate", str(key_file)]) == 0
    monkeypatch.setenv("TDX_ATTEST_DATABASE_URL", database_url)
    monkeypatch.setenv("TDX_ATTEST_MASTER_KEY_FILE", str(key_file))
    assert main(["migrate"]) == 0
    return key_file


def add_platform(sim: SimState, tmp_path: Path) -> None:
    quote = reference_quote(sim, tmp_path)
    assert main(["platform", "add", "qemu-2g", "--from-quote", str(quote),
                 "--event-log", str(INITRD_LOG)]) == 0  # fmt: skip


def measure(tmp_path: Path, initrd: bytes, name: str) -> Path:
    kernel, initrd_file = tmp_path / "vmlinuz", tmp_path / f"{name}.img"
    kernel.write_bytes(bzimage())
    initrd_file.write_bytes(initrd)
    out = tmp_path / f"{name}.manifest.json"
    assert main(["image", "measure", "--kernel", str(kernel), "--initrd", str(initrd_file),
                 "--cmdline", CMDLINE, "--memory", "2G", "--platform", "qemu-2g",
                 "--out", str(out)]) == 0  # fmt: skip
    return out


def test_platform_add_show_list_and_conflicts(
    admin: Path, sim: SimState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_platform(sim, tmp_path)
    assert "added platform qemu-2g: MRTD from the quote, 20 reference events" in (
        capsys.readouterr().out
    )
    assert main(["platform", "list"]) == 0
    assert capsys.readouterr().out.startswith("qemu-2g\tsha384=")
    assert main(["platform", "show", "qemu-2g", "--json"]) == 0
    exported = tmp_path / "exported.json"
    exported.write_text(capsys.readouterr().out)
    assert json.loads(exported.read_text())["format"] == "tdx-boot-attest/platform-profile"
    assert main(["platform", "show", "qemu-2g"]) == 0
    out = capsys.readouterr().out
    assert "td_hob" in out and "TD HOB" in out and "kernel" in out
    # A stored name is never replaced; an exported file is stored under its own name only.
    assert main(["platform", "add", "qemu-2g", "--from-file", str(exported)]) == 1
    assert "conflict: a platform named 'qemu-2g' exists" in capsys.readouterr().err
    assert main(["platform", "add", "other", "--from-file", str(exported)]) == 1
    assert "holds platform 'qemu-2g', not 'other'" in capsys.readouterr().err
    assert main(["platform", "show", "absent"]) == 1
    assert "not_found: no platform named 'absent'" in capsys.readouterr().err
    assert main(["platform", "add", "x", "--from-quote", str(tmp_path / "reference.quote")]) == 1
    assert "--from-quote needs --event-log" in capsys.readouterr().err


def test_an_image_registered_from_a_manifest_alone_unlocks_and_names_a_rebuilt_initrd(
    admin: Path,
    sim: SimState,
    tmp_path: Path,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_platform(sim, tmp_path)
    golden = measure(tmp_path, b"initramfs as built", "golden")
    # Same size: QEMU writes the initrd's size and address into the kernel's setup header,
    # so an initrd of another size changes the measured kernel (RTMR1) too.
    rebuilt = measure(tmp_path, b"initramfs rebuilt!", "rebuilt")
    resized = measure(tmp_path, b"initramfs rebuilt, larger", "resized")
    secret = tmp_path / "pw"
    secret.write_bytes(b"luks-pw-from-manifest")
    assert main(["image", "add", "web-2026-02", "--from-measurements", str(golden),
                 "--passphrase-file", str(secret)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["image", "show", "web-2026-02"]) == 0
    shown = capsys.readouterr().out
    assert "reference events (manifest golden.manifest.json (platform qemu-2g" in shown
    assert "[initrd golden.img]" in shown

    # The verifier reads the same database the admin commands wrote.
    with sim_server(tmp_path, database_url, sim, master_key_file=admin) as srv:

        def boot(manifest_file: Path) -> dict[str, object]:
            manifest = Manifest.from_json(json.loads(manifest_file.read_text()))
            profile = Profile.default().replace(
                mrtd=manifest.mrtd.hex(),
                **{f"rtmr{n}": v.hex() for n, v in enumerate(manifest.rtmrs)},
            )
            log = base64.b64encode(encode_event_log(manifest.events)).decode()
            response, _, _ = srv.boot(profile, event_log=log)
            body: dict[str, object] = response.json()
            body["status"] = response.status_code
            return body

        accepted = boot(golden)
        assert (accepted["status"], accepted["image"]) == (200, "web-2026-02")
        refused = boot(rebuilt)
        assert (refused["status"], refused["reason"]) == (403, "measurement_mismatch")
        assert str(refused["message"]).startswith(
            'rtmr2 differs from image web-2026-02: "Linux initrd" (initrd) '
        )
        (difference,) = cast(list[dict[str, Any]], refused["differences"])
        assert difference["approved_detail"] == "initrd golden.img"
        resized_refusal = boot(resized)
        assert str(resized_refusal["message"]).startswith(
            "rtmr1, rtmr2 differ from image web-2026-02: boot application kernel (kernel) "
        )
        assert '"Linux initrd" (initrd)' in str(resized_refusal["message"])


def test_a_manifest_that_is_not_one_is_refused_and_nothing_registered(
    admin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pw"
    secret.write_bytes(b"luks-pw-x")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "tdx-boot-attest/measurement-manifest", "version": 99}')
    add = ["image", "add", "x", "--passphrase-file", str(secret), "--from-measurements"]
    assert main([*add, str(bad)]) == 1
    assert "manifest" in capsys.readouterr().err
    bad.write_text("not json")
    assert main([*add, str(bad)]) == 1
    assert "the manifest is not JSON" in capsys.readouterr().err
    assert main(["image", "list"]) == 0
    assert capsys.readouterr().out == ""
