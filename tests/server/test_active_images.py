"""Boots match against a kept copy of the images; a change counts from the next boot.

Unit tests of the kept copy, then boots over real HTTP on both databases: a retired or
re-keyed image releases nothing from a stale copy, and a new image is never refused
because the copy predates it.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tdx_boot_attest.server.boot.active_images import ActiveImages
from tdx_boot_attest.server.boot.attestation import IMAGE_ROUNDS
from tdx_boot_attest.server.boot.store import ImageChanged
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.db.models import BootAttestation, SpentNonce
from tdx_boot_attest.server.images import retire_image, rotate_passphrase
from tdx_boot_attest.server.policy import ApprovedImage
from tdx_boot_attest.server.sealing import load_master_key
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.sim_server import SimServer, new_passphrase, sim_server


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _image(image_id: int) -> ApprovedImage:
    """An image told apart by its id (the kept copy never looks inside)."""
    values: dict[str, Any] = {field.name: None for field in fields(ApprovedImage)}
    return ApprovedImage(**{**values, "id": image_id, "name": f"image-{image_id}"})


def test_the_copy_serves_until_it_is_old_or_forgotten() -> None:
    reads: list[int] = []

    def load() -> list[ApprovedImage]:
        reads.append(1)
        return [_image(len(reads))]

    clock = _Clock()
    images = ActiveImages(load, keep_seconds=30, clock=clock)
    assert images.get() == ((_image(1),), True)
    clock.now += 29
    assert images.get() == ((_image(1),), False)
    clock.now += 1
    assert images.get() == ((_image(2),), True)
    images.forget()
    assert images.get() == ((_image(3),), True)
    assert images.read() == (_image(4),)
    assert images.get() == ((_image(4),), False)


def test_a_read_that_started_earlier_does_not_replace_a_newer_one() -> None:
    clock = _Clock()
    slow_started = threading.Event()
    release_slow = threading.Event()
    results = iter([[_image(1)], [_image(2)]])

    def load() -> list[ApprovedImage]:
        batch = next(results)
        if batch[0].id == 1:
            slow_started.set()
            release_slow.wait(5)
        return batch

    images = ActiveImages(load, clock=clock)
    slow = threading.Thread(target=images.read)
    slow.start()
    assert slow_started.wait(5)
    clock.now += 1
    assert images.read() == (_image(2),)
    release_slow.set()
    slow.join(5)
    assert images.get() == ((_image(2),), False)


def _counts(database_url: str) -> tuple[int, int]:
    engine = make_engine(database_url, pool_size=1)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            rows = session.scalar(select(func.count()).select_from(BootAttestation)) or 0
            spent = session.scalar(select(func.count()).select_from(SpentNonce)) or 0
            return rows, spent
    finally:
        engine.dispose()


@contextmanager
def _admin(srv: SimServer) -> Iterator[Session]:
    """A session on the server's database, as an operator's command would open one."""
    engine = make_engine(srv.settings.database_url, pool_size=1)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            yield session
    finally:
        engine.dispose()


def test_a_retired_image_releases_nothing_from_the_kept_copy(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    with sim_server(tmp_path, database_url, sim) as srv:
        srv.register_image("golden")
        first, _, _ = srv.boot()
        assert first.status_code == 200, first.text
        images, fresh = srv.app.state.ctx.active_images.get()
        assert [image.name for image in images] == ["golden"] and not fresh
        with _admin(srv) as session:
            retire_image(session, "golden", dt.datetime.now(dt.UTC))
        response, _, _ = srv.boot()
        assert response.status_code == 403, response.text
        assert response.json()["reason"] == "no_image_registered"
    # One row per attempt, each attempt's nonce spent once; nothing else written.
    assert _counts(database_url) == (2, 2)


def test_a_rekeyed_image_releases_its_new_passphrase_at_once(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    with sim_server(tmp_path, database_url, sim) as srv:
        old = srv.register_image("golden")
        response, nonce, key = srv.boot()
        assert key.open(response.json()["sealed_key"], nonce) == old
        new = new_passphrase()
        master_key = load_master_key(srv.settings.master_key_file, dev_mode=False)
        with _admin(srv) as session:
            rotate_passphrase(session, master_key, "golden", new, dt.datetime.now(dt.UTC))
        response, nonce, key = srv.boot()
        assert response.status_code == 200, response.text
        assert key.open(response.json()["sealed_key"], nonce) == new
    assert _counts(database_url) == (2, 2)


def test_an_image_added_after_the_copy_was_read_is_approved(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    other = Profile.default().with_rtmr(2, "22" * 48)
    with sim_server(tmp_path, database_url, sim) as srv:
        srv.register_image("golden")
        assert srv.boot()[0].status_code == 200
        passphrase = srv.register_image("second", profile=other)
        response, nonce, key = srv.boot(profile=other)
        assert response.status_code == 200, response.text
        assert response.json()["image"] == "second"
        assert key.open(response.json()["sealed_key"], nonce) == passphrase


def test_an_image_changing_in_every_round_is_a_503_with_its_row_and_no_spend(
    tmp_path: Path, database_url: str, sim: SimState, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sim_server(tmp_path, database_url, sim) as srv:
        srv.register_image("golden")
        store = srv.app.state.ctx.boot_store
        rounds: list[str] = []

        def always_changed(*args: Any, **kwargs: Any) -> None:
            rounds.append("spend")
            raise ImageChanged("golden")

        monkeypatch.setattr(store, "spend_nonce_and_record", always_changed)
        response, _, _ = srv.boot()
        assert response.status_code == 503, response.text
        assert response.json()["reason"] == "database_unavailable"
        assert "images changed" in response.json()["message"]
        assert int(response.headers["Retry-After"]) >= 1
        assert rounds == ["spend"] * IMAGE_ROUNDS
    # The refusal is recorded; the nonce is not spent (the agent may retry with it).
    assert _counts(database_url) == (1, 0)
