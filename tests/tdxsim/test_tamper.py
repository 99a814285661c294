"""Flipping any single signed byte of a quote or of the collateral makes verification fail."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator

import pytest

from tdx_boot_attest.tdxsim import abi
from tdx_boot_attest.tdxsim.state import SimState
from tests.support.dcap import refusal, verify
from tests.tdxsim.conftest import FIXED_NOW_SECS, REPORT_DATA


def _regions(quote: bytes) -> dict[str, tuple[int, int]]:
    """Absolute [start, end) offsets of each part of a v4/v5 quote, found by walking it."""
    parsed = abi.parse_tdx_quote(quote)
    signed_end = len(parsed.signed_bytes())
    sig_start = signed_end + 4
    key_start = sig_start + 64
    qe_start = key_start + 64 + 6  # certification data type 6 header
    qe_sig_start = qe_start + abi.ENCLAVE_REPORT_BYTES
    auth_start = qe_sig_start + 64 + 2
    auth_end = auth_start + len(parsed.signature_data.qe.qe_auth_data)
    chain_start = auth_end + 6  # certification data type 5 header
    chain = parsed.signature_data.qe.pck_chain_pem()
    leaf_end = chain.index(b"-----END CERTIFICATE-----\n") + 26
    ca_end = chain.index(b"-----END CERTIFICATE-----\n", leaf_end) + 26
    return {
        "header": (0, abi.HEADER_BYTES),
        "body": (abi.HEADER_BYTES, signed_end),
        "quote signature": (sig_start, key_start),
        "attestation key": (key_start, key_start + 64),
        "qe report": (qe_start, qe_sig_start),
        "qe report signature": (qe_sig_start, qe_sig_start + 64),
        "qe auth data": (auth_start, auth_end),
        "pck leaf certificate": (chain_start, chain_start + leaf_end),
        "pck platform ca certificate": (chain_start + leaf_end, chain_start + ca_end),
    }


def _flipped(data: bytes, positions: Iterable[int]) -> Iterator[tuple[int, bytes]]:
    for pos in positions:
        copy = bytearray(data)
        copy[pos] ^= 0x01
        yield pos, bytes(copy)


REGIONS = [
    "header",
    "body",
    "quote signature",
    "attestation key",
    "qe report",
    "qe report signature",
    "qe auth data",
    "pck leaf certificate",
    "pck platform ca certificate",
]


VARIANTS = {"v4": (4, False), "v5-tdx1.0": (5, False), "v5-tdx1.5": (5, True)}
# The parts after the body are laid out the same in every version, so v5 quotes only
# repeat the parts whose position or content depends on the body.
CASES = [("v4", region) for region in REGIONS] + [
    (variant, region)
    for variant in ("v5-tdx1.0", "v5-tdx1.5")
    for region in ("header", "body", "quote signature")
]


@pytest.fixture(scope="module")
def quotes(shared_state: SimState) -> dict[str, bytes]:
    out = {}
    for name, (version, td15) in VARIANTS.items():
        quote = shared_state.make_quote(REPORT_DATA, version=version, td15=td15)
        assert verify(quote, shared_state.collateral_json, shared_state.root_ca_der, FIXED_NOW_SECS)
        out[name] = quote
    return out


@pytest.mark.parametrize(("variant", "region"), CASES)
def test_every_byte_flip_in_region_is_refused(
    quotes: dict[str, bytes], shared_state: SimState, variant: str, region: str
) -> None:
    quote, state = quotes[variant], shared_state
    start, end = _regions(quote)[region]
    # PEM certificates are long: every fifth byte still hits each DER field. Line breaks
    # are not content (a verifier may read \x0b as whitespace too), so they are skipped.
    step = 5 if "certificate" in region else (1 if variant == "v4" else 3)
    positions = [p for p in range(start, end, step) if quote[p] != 0x0A]
    accepted = [
        pos
        for pos, tampered in _flipped(quote, positions)
        if _accepted(tampered, state.collateral_json, state.root_ca_der)
    ]
    assert end > start
    assert accepted == []


def _accepted(quote: bytes, collateral_json: str, root: bytes) -> bool:
    try:
        refusal(quote, collateral_json, root, FIXED_NOW_SECS)
    except AssertionError:
        return True
    return False


@pytest.mark.parametrize("variant", VARIANTS)
def test_regions_cover_the_quote_up_to_the_unauthenticated_root_copy(
    quotes: dict[str, bytes], variant: str
) -> None:
    regions = _regions(quotes[variant])
    spans = sorted(regions.values())
    # Gaps are only the length/type fields around variable-size parts.
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    assert gaps == [0, 4, 0, 6, 0, 2, 6, 0]


def _collateral_with(state: SimState, field: str, text: str) -> str:
    data = json.loads(state.collateral_json)
    data[field] = text
    return json.dumps(data)


@pytest.mark.parametrize("field", ["tcb_info", "qe_identity"])
def test_flipping_a_byte_of_signed_json_is_refused(shared_state: SimState, field: str) -> None:
    quote = shared_state.make_quote(REPORT_DATA)
    text = json.loads(shared_state.collateral_json)[field]
    step = 1 if field == "qe_identity" else 7
    accepted = []
    for pos in range(0, len(text), step):
        tampered = text[:pos] + chr(ord(text[pos]) ^ 0x01) + text[pos + 1 :]
        collateral = _collateral_with(shared_state, field, tampered)
        if _accepted(quote, collateral, shared_state.root_ca_der):
            accepted.append(pos)
    assert accepted == []


@pytest.mark.parametrize("field", ["tcb_info_signature", "qe_identity_signature"])
def test_flipping_a_byte_of_a_collateral_signature_is_refused(
    shared_state: SimState, field: str
) -> None:
    quote = shared_state.make_quote(REPORT_DATA)
    signature = bytes.fromhex(json.loads(shared_state.collateral_json)[field])
    accepted = [
        pos
        for pos, tampered in _flipped(signature, range(len(signature)))
        if _accepted(
            quote, _collateral_with(shared_state, field, tampered.hex()), shared_state.root_ca_der
        )
    ]
    assert len(signature) == 64
    assert accepted == []


@pytest.mark.parametrize("field", ["root_ca_crl", "pck_crl"])
def test_flipping_a_byte_of_a_crl_is_refused(shared_state: SimState, field: str) -> None:
    quote = shared_state.make_quote(REPORT_DATA)
    crl = bytes.fromhex(json.loads(shared_state.collateral_json)[field])
    accepted = [
        pos
        for pos, tampered in _flipped(crl, range(0, len(crl), 2))
        if _accepted(
            quote, _collateral_with(shared_state, field, tampered.hex()), shared_state.root_ca_der
        )
    ]
    assert accepted == []
