"""A passphrase file is read as ``cryptsetup --key-file`` reads it: the trailing newline
of a file made with ``base64 > luks.pass`` is part of the key on both sides."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from tdx_boot_attest.server.cli import main
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.db.models import Image
from tdx_boot_attest.server.sealing import load_master_key
from tests.support.agent_e2e import passphrase_opens

pytestmark = pytest.mark.skipif(
    shutil.which("cryptsetup") is None, reason="cryptsetup is not installed (make deps)"
)


def _released(database_url: str, key_file: Path, name: str) -> bytes:
    """The passphrase the verifier would seal to an agent for image ``name``."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            image = session.scalars(select(Image).where(Image.name == name)).one()
            sealed = image.sealed_passphrase
    finally:
        engine.dispose()
    return load_master_key(key_file, dev_mode=False).unseal(sealed, name)


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_a_newline_ended_key_file_opens_the_volume_it_formatted(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in list(os.environ):
        if variable.startswith("TDX_ATTEST_") and variable != "TDX_ATTEST_TEST_PG_URL":
            monkeypatch.delenv(variable)
    # What `head -c 32 /dev/urandom | base64 > luks.pass` makes: text ending in a newline.
    pass_file = tmp_path / "luks.pass"
    pass_file.write_bytes(base64.b64encode(secrets.token_bytes(32)) + b"\n")
    volume = tmp_path / "disk.img"
    with volume.open("wb") as handle:
        handle.truncate(20 * 1024 * 1024)
    subprocess.run(
        ["cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "pbkdf2",
         "--pbkdf-force-iterations", "1000", "--key-file", str(pass_file), str(volume)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    key_file = tmp_path / "master.key"
    database_url = f"sqlite:///{tmp_path}/server.db"
    monkeypatch.setenv("TDX_ATTEST_DATABASE_URL", database_url)
    monkeypatch.setenv("TDX_ATTEST_MASTER_KEY_FILE", str(key_file))
    assert main(["master-key", "generate", str(key_file)]) == 0
    assert main(["migrate"]) == 0
    argument = str(pass_file)
    if source == "stdin":
        argument = "-"
        monkeypatch.setattr("sys.stdin", pass_file.open("r", encoding="ascii"))
    add = ["image", "add", "golden", "--mrtd", "11" * 48, "--passphrase-file", argument]
    add += [f"--rtmr{n}={'22' * 48}" for n in range(4)]
    assert main(add) == 0

    released = _released(database_url, key_file, "golden")
    assert released == pass_file.read_bytes()
    assert passphrase_opens(volume, released)
    # The old reading (newline dropped) is the key the volume does not have.
    assert not passphrase_opens(volume, released.rstrip(b"\n"))
