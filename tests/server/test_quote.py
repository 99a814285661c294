"""server.quote.parse_td_quote on arbitrary and mutated bytes: a TdQuote or a ServerError."""

from __future__ import annotations

import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.errors import ServerError
from tdx_boot_attest.server.quote import parse_td_quote
from tdx_boot_attest.tdxsim.state import SimState
from tests.tdxsim.conftest import fixed_clock

REPORT_DATA = bytes(range(64))
# The reasons a quote that does not parse may be refused with.
PARSE_REASONS = {Reason.QUOTE_MALFORMED, Reason.NOT_TDX, Reason.QUOTE_VERSION_UNSUPPORTED}
_SAMPLES: dict[int, bytes] = {}


def sample(version: int) -> bytes:
    """A genuine simulator quote of ``version``, made once per session."""
    if version not in _SAMPLES:
        with tempfile.TemporaryDirectory() as tmp:
            state = SimState.init(tmp, seed=5, clock=fixed_clock)
            _SAMPLES[version] = state.make_quote(REPORT_DATA, version=version)
    return _SAMPLES[version]


def check(data: bytes) -> None:
    """Parse ``data``: what parses carries 64 bytes of REPORTDATA; anything else is typed."""
    try:
        quote = parse_td_quote(data)
    except ServerError as exc:
        assert exc.reason in PARSE_REASONS, exc.reason
        return
    assert quote.version in (4, 5)
    assert len(quote.report_data) == 64


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(version=st.sampled_from([4, 5]),
       edits=st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 255)), max_size=4),
       cut=st.integers(0, 6000))  # fmt: skip
def test_mutated_quotes_parse_or_raise_a_typed_refusal(
    version: int, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(sample(version))
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    check(bytes(data[:cut]))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    check(data)


def test_the_samples_parse() -> None:
    for version in (4, 5):
        assert parse_td_quote(sample(version)).version == version
