"""Two registered images: each image's quote gets that image's passphrase (real HTTP)."""

from __future__ import annotations

from pathlib import Path

from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.sim_server import sim_server


def test_each_image_gets_its_own_passphrase(
    tmp_path: Path, database_url: str, sim: SimState
) -> None:
    image_a = Profile.default()
    image_b = image_a.with_mrtd("b0" * 48).with_rtmr(1, "b1" * 48).with_rtmr(2, "b2" * 48)
    assert (image_a.mrtd, image_a.rtmr1, image_a.rtmr2) != (
        image_b.mrtd,
        image_b.rtmr1,
        image_b.rtmr2,
    )
    with sim_server(tmp_path, database_url, sim) as srv:
        passphrase_a = srv.register_image("image-a", image_a)
        passphrase_b = srv.register_image("image-b", image_b)
        assert passphrase_a != passphrase_b
        # B first, so the answer cannot come from "the first image registered".
        for profile, name, passphrase in (
            (image_b, "image-b", passphrase_b),
            (image_a, "image-a", passphrase_a),
            (image_b, "image-b", passphrase_b),
        ):
            response, nonce, key = srv.boot(profile)
            assert response.status_code == 200, response.text
            assert response.json()["image"] == name
            assert key.open(response.json()["sealed_key"], nonce) == passphrase
