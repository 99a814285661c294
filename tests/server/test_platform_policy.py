"""The platform pins (MRSEAM, XFAM, TD attributes, minimum TEE_TCB_SVN): each set and unset.

The simulator makes every quote, and each one passes DCAP verification first: a pin only
ever judges a genuine quote. Boot attestations go through the app over HTTP on SQLite and
PostgreSQL; runtime attestation runs the same check.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tdx_boot_attest.server.errors import AttestationRefused, ConfigurationError
from tdx_boot_attest.server.platform_policy import (
    MaskedValue,
    PlatformPolicy,
    check_platform_policy,
)
from tdx_boot_attest.server.quote import parse_td_quote
from tdx_boot_attest.server.settings import Settings
from tdx_boot_attest.tdxsim.profile import Profile
from tdx_boot_attest.tdxsim.state import SimState
from tests.conftest import REPO_ROOT
from tests.support.fleet_env import FleetEnv, decoded
from tests.support.fleet_fixtures import FleetFactory
from tests.support.miner_keys import MinerKey

DEFAULT = Profile.default()
# The simulator's default TD: SEPT_VE_DISABLE (bit 28) set, DEBUG clear.
SEPT_VE_DISABLE_ONLY = "0000001000000000"
# Bits 28 (SEPT_VE_DISABLE) and 30 (PKS), in the quote's little-endian byte order.
SEPT_AND_PKS = "0000005000000000"


def boot_verdict(env: FleetEnv, profile: Profile = DEFAULT) -> tuple[int, str | None]:
    client = env.client()
    nonce = bytes.fromhex(client.get("/servers/nonce").json()["nonce"])
    public = X25519PrivateKey.generate().public_key().public_bytes_raw()
    quote = env.state.make_quote(nonce + hashlib.sha256(public).digest(), profile)
    response = client.post(
        "/servers/boot/attestation",
        headers={"X-Chutes-Nonce": nonce.hex()},
        json={
            "quote": base64.b64encode(quote).decode(),
            "public_key": base64.b64encode(public).decode(),
        },
    )
    if response.status_code == 200:
        return 200, None
    return response.status_code, decoded(response)["reason"]


def quoted(sim_state: SimState, profile: Profile = DEFAULT) -> Any:
    return parse_td_quote(sim_state.make_quote(bytes(64), profile))


def test_nothing_is_pinned_by_default(make_fleet: FleetFactory, sim_state: SimState) -> None:
    env = make_fleet()
    assert env.ctx.platform_policy == PlatformPolicy()
    odd = DEFAULT.replace(mrseam="11" * 48, xfam="0300000000000000", td_attributes=SEPT_AND_PKS)
    assert boot_verdict(env, odd) == (200, None)


def test_mrseam_pin(make_fleet: FleetFactory, sim_state: SimState) -> None:
    env = make_fleet(allowed_mrseams=("22" * 48, DEFAULT.mrseam.upper()))
    assert boot_verdict(env) == (200, None)
    assert boot_verdict(env, DEFAULT.replace(mrseam="11" * 48)) == (403, "mrseam_rejected")


WITHOUT_AMX = DEFAULT.replace(xfam="e700000000000000")


def test_xfam_pin_exact(make_fleet: FleetFactory) -> None:
    exact = make_fleet(xfam_value=DEFAULT.xfam)
    assert boot_verdict(exact) == (200, None)
    assert boot_verdict(exact, WITHOUT_AMX) == (403, "xfam_rejected")


def test_xfam_pin_masked(make_fleet: FleetFactory) -> None:
    # Only AVX-512 (bits 5-7) is pinned: AMX may come and go.
    masked = make_fleet(xfam_value="e000000000000000", xfam_mask="e000000000000000")
    assert boot_verdict(masked) == (200, None)
    assert boot_verdict(masked, WITHOUT_AMX) == (200, None)
    assert boot_verdict(masked, DEFAULT.replace(xfam="0702060000000000")) == (403, "xfam_rejected")


def test_td_attributes_pin(make_fleet: FleetFactory) -> None:
    # SEPT_VE_DISABLE must be set and PKS clear; other bits are free.
    env = make_fleet(td_attributes_value=SEPT_VE_DISABLE_ONLY, td_attributes_mask=SEPT_AND_PKS)
    assert boot_verdict(env) == (200, None)
    with_pks = DEFAULT.replace(td_attributes=SEPT_AND_PKS)
    assert boot_verdict(env, with_pks) == (403, "td_attributes_rejected")


@pytest.mark.parametrize(
    ("raise_by", "verdict"), [(0, (200, None)), (1, (403, "tee_tcb_svn_too_low"))]
)
def test_minimum_tee_tcb_svn_pin(
    make_fleet: FleetFactory, sim_state: SimState, raise_by: int, verdict: tuple[int, str | None]
) -> None:
    minimum = bytearray(quoted(sim_state).tee_tcb_svn)
    minimum[0] += raise_by
    assert boot_verdict(make_fleet(minimum_tee_tcb_svn=bytes(minimum).hex())) == verdict


def test_runtime_attestation_applies_the_pins_too(make_fleet: FleetFactory) -> None:
    env = make_fleet(allowed_mrseams=(DEFAULT.mrseam,))
    key = env.add_miner(MinerKey.from_seed(3))
    env.boot()
    assert env.register(key, "node-1").status_code == 201
    assert env.attest(key, "node-1").status_code == 200
    other_module = env.runtime_profile.replace(mrseam="33" * 48)
    response = env.attest(key, "node-1", other_module)
    assert (response.status_code, decoded(response)["reason"]) == (403, "mrseam_rejected")


def test_refusals_name_what_differs(sim_state: SimState) -> None:
    quote = quoted(sim_state, DEFAULT.replace(td_attributes=SEPT_AND_PKS))
    policy = PlatformPolicy.parse(
        td_attributes_value=SEPT_VE_DISABLE_ONLY, td_attributes_mask=SEPT_AND_PKS
    )
    with pytest.raises(AttestationRefused) as caught:
        check_platform_policy(quote, policy)
    assert "bit 30 (PKS)" in caught.value.message
    current = quoted(sim_state).tee_tcb_svn
    minimum = bytes(current[:3]) + bytes([current[3] + 2]) + bytes(current[4:])
    with pytest.raises(AttestationRefused) as caught:
        check_platform_policy(
            quoted(sim_state), PlatformPolicy.parse(minimum_tee_tcb_svn=minimum.hex())
        )
    assert f"component 3: {current[3]} < {current[3] + 2}" in caught.value.message


def test_masked_values_name_little_endian_bits() -> None:
    rule = MaskedValue(value=bytes.fromhex("0000001000000000"), mask=b"\xff" * 8)
    assert rule.differing_bits(bytes.fromhex("0100001000000000")) == [0]
    assert rule.differing_bits(bytes.fromhex("0000000000000080")) == [28, 63]


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"allowed_mrseams": ("ab",)}, "allowed_mrseams"),
        ({"allowed_mrseams": ("zz" * 48,)}, "not hexadecimal"),
        ({"xfam_mask": "ffffffffffffffff"}, "xfam_mask is set without xfam_value"),
        ({"xfam_value": "e7020600"}, "8 bytes"),
        (
            {"td_attributes_value": "0100000000000000", "td_attributes_mask": "0000001000000000"},
            "outside td_attributes_mask",
        ),
        ({"minimum_tee_tcb_svn": "03" * 15}, "minimum_tee_tcb_svn"),
    ],
)
def test_bad_pins_stop_the_server_at_start_up(settings: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        Settings(**settings)


def test_pins_load_from_the_environment() -> None:
    settings = Settings.load(
        environ={
            "TDX_ATTEST_ALLOWED_MRSEAMS": f"{'aa' * 48}, 0x{'bb' * 48}",
            "TDX_ATTEST_MINIMUM_TEE_TCB_SVN": "03" * 16,
        }
    )
    policy = settings.platform_policy()
    assert policy.mrseams == {"aa" * 48, "bb" * 48}
    assert policy.minimum_tee_tcb_svn == b"\x03" * 16
    assert policy.xfam is None and policy.td_attributes is None


def test_the_server_guides_toml_examples_are_valid_settings(tmp_path: Path) -> None:
    text = (REPO_ROOT / "docs" / "server.md").read_text(encoding="utf-8")
    examples = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(examples) >= 2
    for number, example in enumerate(examples):
        path = tmp_path / f"example{number}.toml"
        path.write_text(example)
        Settings.load(environ={}, config_file=path).platform_policy()
