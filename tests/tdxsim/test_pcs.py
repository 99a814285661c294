"""The PCS/PCCS endpoint: routes and documents (pure), then the HTTP server (slow)."""

from __future__ import annotations

import asyncio
import json
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dcap_qvl
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdx_boot_attest.tdxsim.pcs import PcsCollateral, PcsError, PcsServer, _route
from tdx_boot_attest.tdxsim.state import SimState
from tests.tdxsim.conftest import FIXED_NOW_SECS, REPORT_DATA, fixed_clock

TCB = "/tdx/certification/v4/tcb"
QE = "/tdx/certification/v4/qe/identity"
PCKCRL = "/sgx/certification/v4/pckcrl"
ROOTCRL = "/sgx/certification/v4/rootcacrl"
REAL_TDX_TIME = 1750329147 + 3600  # inside the real vector's validity window


def fetch_collateral(url: str, quote: bytes) -> dcap_qvl.QuoteCollateralV3:
    async def fetch() -> dcap_qvl.QuoteCollateralV3:
        return await dcap_qvl.get_collateral(url, quote)

    return asyncio.run(fetch())


def check_signed(text: str, signature: bytes, chain_pem: str) -> None:
    signer = x509.load_pem_x509_certificates(chain_pem.encode())[0]
    public_key = signer.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    public_key.verify(der, text.encode(), ec.ECDSA(hashes.SHA256()))


@pytest.fixture(scope="module")
def collateral(shared_state: SimState) -> PcsCollateral:
    return PcsCollateral.from_state(shared_state)


@pytest.fixture
def server(collateral: PcsCollateral) -> Iterator[PcsServer]:
    with PcsServer(collateral) as running:
        yield running


# -- documents (no network) --------------------------------------------------------------------
def test_collateral_is_read_from_the_state(
    shared_state: SimState, collateral: PcsCollateral
) -> None:
    assert collateral.fmspc == shared_state.fmspc.hex().upper()
    assert collateral.ca == "platform"
    assert json.loads(collateral.tcb_info)["fmspc"].upper() == collateral.fmspc


def test_malformed_collateral_is_refused() -> None:
    with pytest.raises(PcsError):
        PcsCollateral.from_collateral_json("{}")
    with pytest.raises(PcsError):
        PcsCollateral.from_collateral_json("not json")


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from([TCB, QE, PCKCRL, ROOTCRL, "/", "/x"]) | st.text(max_size=30),
    query=st.dictionaries(
        st.sampled_from(["fmspc", "ca", "encoding", "update", "x"]) | st.text(max_size=8),
        st.lists(st.text(max_size=16), min_size=1, max_size=2),
        max_size=4,
    ),
)
def test_any_request_gets_a_clean_answer(
    collateral: PcsCollateral, path: str, query: dict[str, list[str]]
) -> None:
    assert _route(collateral, path, query).status in {200, 400, 404}


# -- the server ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_dcap_qvl_fetches_collateral_that_verifies(
    shared_state: SimState, server: PcsServer
) -> None:
    quote = shared_state.make_quote(REPORT_DATA)
    fetched = fetch_collateral(server.url, quote)
    report = dcap_qvl.verify_with_root_ca(quote, fetched, shared_state.root_ca_der, FIXED_NOW_SECS)
    assert report.status == "UpToDate"
    fmspc = shared_state.fmspc.hex().upper()
    assert server.requests == [
        f"{PCKCRL}?ca=platform&encoding=der",
        f"{TCB}?fmspc={fmspc}&update=standard",
        f"{QE}?update=standard",
        ROOTCRL,
    ]
    expected = json.loads(shared_state.collateral_json)
    got = json.loads(fetched.to_json())
    assert {key: got[key] for key in expected} == expected


@pytest.mark.slow
def test_real_intel_collateral_round_trips(vectors_dir: Path) -> None:
    root = (vectors_dir / "intel_sgx_root_ca.der").read_bytes()
    text = (vectors_dir / "tdx_quote_collateral.json").read_text()
    quote = (vectors_dir / "tdx_quote").read_bytes()
    with PcsServer(PcsCollateral.from_collateral_json(text, root_ca_der=root)) as server:
        fetched = fetch_collateral(server.url, quote)
        # The root CA CRL is also served where the Intel root certificate says it lives.
        der = httpx.get(server.url + "/IntelSGXRootCA.der").content
    assert dcap_qvl.verify(quote, fetched, REAL_TDX_TIME).status == "UpToDate"
    assert der == bytes.fromhex(json.loads(text)["root_ca_crl"])


@pytest.mark.slow
def test_tcb_info_and_qe_identity_are_served_as_signed(
    server: PcsServer, collateral: PcsCollateral
) -> None:
    tcb = httpx.get(f"{server.url}{TCB}", params={"fmspc": collateral.fmspc.lower()})
    assert tcb.status_code == 200
    assert tcb.headers["content-type"] == "application/json"
    chain = unquote(tcb.headers["TCB-Info-Issuer-Chain"])
    assert chain == collateral.tcb_info_issuer_chain
    assert "%0A" in tcb.headers["TCB-Info-Issuer-Chain"]  # URL-encoded, as Intel sends it
    body = tcb.text
    signed_text = body[len('{"tcbInfo":') : body.rindex(',"signature":')]
    signature = bytes.fromhex(json.loads(body)["signature"])
    check_signed(signed_text, signature, chain)

    qe = httpx.get(f"{server.url}{QE}")
    assert qe.status_code == 200
    chain = unquote(qe.headers["SGX-Enclave-Identity-Issuer-Chain"])
    signed_text = qe.text[len('{"enclaveIdentity":') : qe.text.rindex(',"signature":')]
    check_signed(signed_text, bytes.fromhex(qe.json()["signature"]), chain)
    assert qe.json()["enclaveIdentity"]["id"] == "TD_QE"


@pytest.mark.slow
def test_crls_and_their_headers(server: PcsServer, collateral: PcsCollateral) -> None:
    der = httpx.get(f"{server.url}{PCKCRL}", params={"ca": "platform", "encoding": "der"})
    assert der.status_code == 200
    assert der.headers["content-type"] == "application/pkix-crl"
    assert unquote(der.headers["SGX-PCK-CRL-Issuer-Chain"]) == collateral.pck_crl_issuer_chain
    assert der.content == collateral.pck_crl
    assert "PCK Platform CA" in x509.load_der_x509_crl(der.content).issuer.rfc4514_string()
    pem = httpx.get(f"{server.url}{PCKCRL}", params={"ca": "platform"})
    assert x509.load_pem_x509_crl(pem.content) == x509.load_der_x509_crl(der.content)
    root = httpx.get(f"{server.url}{ROOTCRL}")
    assert bytes.fromhex(root.text) == collateral.root_ca_crl


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("GET", f"{TCB}?fmspc=112233445566", 404),
        ("GET", f"{TCB}?fmspc=1122", 400),
        ("GET", f"{TCB}?fmspc=zz2233445566", 400),
        ("GET", TCB, 400),
        ("GET", f"{QE}?update=sometimes", 400),
        ("GET", f"{PCKCRL}?ca=processor&encoding=der", 404),
        ("GET", f"{PCKCRL}?ca=somebody", 400),
        ("GET", f"{PCKCRL}?ca=platform&encoding=xml", 400),
        ("GET", "/sgx/certification/v4/tcb?fmspc=00806F050000", 404),
        ("GET", "/nothing/here", 404),
        ("POST", f"{QE}", 405),
    ],
)
def test_bad_requests_get_4xx(server: PcsServer, method: str, target: str, status: int) -> None:
    assert httpx.request(method, server.url + target).status_code == status


@pytest.mark.slow
def test_failures_once_and_until_cleared(shared_state: SimState, server: PcsServer) -> None:
    quote = shared_state.make_quote(REPORT_DATA)
    server.fail(503, times=1)
    with pytest.raises(ValueError, match="503"):
        fetch_collateral(server.url, quote)
    fetch_collateral(server.url, quote)
    server.fail(500, path_prefix="/tdx/")
    for _ in range(2):
        with pytest.raises(ValueError, match="500"):
            fetch_collateral(server.url, quote)
    assert httpx.get(server.url + ROOTCRL).status_code == 200  # other paths unaffected
    server.clear_faults()
    fetch_collateral(server.url, quote)
    with pytest.raises(ValueError):
        server.fail(200)


@pytest.mark.slow
def test_stall_and_outage(server: PcsServer) -> None:
    server.set_delay(1.0)
    with pytest.raises(httpx.TimeoutException):
        httpx.get(server.url + ROOTCRL, timeout=0.2)
    server.set_delay(0)
    port = server.port
    with httpx.Client(timeout=2) as kept_alive:
        assert kept_alive.get(server.url + ROOTCRL).status_code == 200
        server.go_down()
        assert not server.is_up
        with pytest.raises(httpx.TransportError):  # the open connection is cut too
            kept_alive.get(server.url + ROOTCRL)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + ROOTCRL, timeout=2)
    server.come_back()
    assert server.port == port
    assert httpx.get(server.url + ROOTCRL, timeout=2).status_code == 200


def _open_request(url: str, target: str) -> socket.socket:
    parsed = urlsplit(url)
    sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 80), 60)
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: pcs\r\n\r\n".encode())
    return sock


def _nothing_more_to_read(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _wait_for_request(server: PcsServer, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(server.requests) < count:
        assert time.monotonic() < deadline, "the request never reached the server"
        time.sleep(0.01)


@pytest.mark.slow
def test_stall_reads_requests_and_answers_none_until_cleared(server: PcsServer) -> None:
    server.stall()
    with _open_request(server.url, ROOTCRL) as sock:
        _wait_for_request(server, 1)
        assert _nothing_more_to_read(sock)
        server.clear_faults()
        assert _read_answer(sock).startswith(b"HTTP/1.1 200 OK")


@pytest.mark.slow
def test_trickle_sends_one_byte_at_a_time(server: PcsServer) -> None:
    # An interval no test outlives: only the first byte can have been sent.
    server.set_trickle(3600)
    with _open_request(server.url, ROOTCRL) as sock:
        assert sock.recv(65536) == b"H"
        assert _nothing_more_to_read(sock)
        server.clear_faults()
        answer = b"H" + _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ValueError):
        server.set_trickle(-1)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--stall"], ["--trickle", "3600"]], ids=["stall", "trickle"])
def test_cli_stalls_and_trickles(shared_state: SimState, flags: list[str]) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tdxsim",
            "pcs",
            "--state",
            str(shared_state.path),
            "--listen",
            "127.0.0.1:0",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        with _open_request(url, ROOTCRL) as sock:
            if flags[0] == "--trickle":
                assert sock.recv(65536) == b"H"
            # Stalled: no answer; trickling: no second byte for an hour.
            with pytest.raises(httpx.ReadTimeout):
                httpx.get(url + ROOTCRL, timeout=httpx.Timeout(5.0, read=1.0))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_cli_serves_fails_goes_down_and_stops(shared_state: SimState) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tdxsim",
            "pcs",
            "--state",
            str(shared_state.path),
            "--listen",
            "127.0.0.1:0",
            "--fail",
            "503*1",
            "--outage",
            "4:3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("tdxsim pcs listening on http://127.0.0.1:")
        url = line.split()[-1]
        assert httpx.get(url + ROOTCRL).status_code == 503
        assert httpx.get(url + ROOTCRL).status_code == 200
        # The simulator announces each state change after it has happened, so each probe
        # knows what it must see. While down, the connection is refused, or reset when it
        # raced the listening socket's close: any transport error means "down".
        assert proc.stdout.readline().startswith("tdxsim pcs down for 3.0 s")
        with pytest.raises(httpx.TransportError):
            httpx.get(url + ROOTCRL, timeout=2)
        assert proc.stdout.readline().startswith("tdxsim pcs up again on " + url)
        assert httpx.get(url + ROOTCRL, timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_replaced_collateral_is_served_from_the_next_request(
    make_state: Callable[..., SimState],
) -> None:
    state = make_state(seed=3)
    with PcsServer(PcsCollateral.from_state(state)) as server:
        fmspc = state.fmspc.hex()
        before = httpx.get(f"{server.url}{TCB}", params={"fmspc": fmspc}).json()["tcbInfo"]
        state.reissue_collateral(tcb_evaluation_data_number=99)
        server.collateral = PcsCollateral.from_state(state)
        after = httpx.get(f"{server.url}{TCB}", params={"fmspc": fmspc}).json()["tcbInfo"]
    assert before["tcbEvaluationDataNumber"] != 99
    assert after["tcbEvaluationDataNumber"] == 99


@pytest.mark.slow
def test_cli_serves_collateral_reissued_on_disk(make_state: Callable[..., SimState]) -> None:
    state = make_state(seed=4)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tdxsim",
            "pcs",
            "--state",
            str(state.path),
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        target = f"{url}{TCB}?fmspc={state.fmspc.hex()}"
        assert httpx.get(target).json()["tcbInfo"]["tcbEvaluationDataNumber"] != 77
        SimState.load(state.path, clock=fixed_clock).reissue_collateral(
            tcb_evaluation_data_number=77
        )
        assert httpx.get(target).json()["tcbInfo"]["tcbEvaluationDataNumber"] == 77
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
