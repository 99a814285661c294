"""A PCS/PCCS look-alike serving the simulator's collateral over HTTP.

Paths and headers follow Intel's Provisioning Certification Service v4 (and a PCCS in
front of it), which is what collateral fetchers such as ``dcap_qvl.get_collateral`` call:

=================================================  ==========================================
``GET /tdx/certification/v4/tcb?fmspc=HEX12``      ``{"tcbInfo":…,"signature":"hex"}`` with the
                                                   signed tcbInfo text verbatim; header
                                                   ``TCB-Info-Issuer-Chain`` (URL-encoded PEM)
``GET /tdx/certification/v4/qe/identity``          ``{"enclaveIdentity":…,"signature":"hex"}``;
                                                   header ``SGX-Enclave-Identity-Issuer-Chain``
``GET /sgx/certification/v4/pckcrl?ca=platform``   the PCK CRL (``encoding=der``: DER, default
                                                   PEM); header ``SGX-PCK-CRL-Issuer-Chain``
``GET /sgx/certification/v4/rootcacrl``            the root CA CRL as hex text (what a PCCS
                                                   serves)
``GET <path of the root CA's CRL distribution      the root CA CRL, DER (what Intel serves at
point URL>``                                       certificates.trustedservices.intel.com)
=================================================  ==========================================

Unknown FMSPC or CA: 404; malformed parameters: 400; other paths: 404; other methods: 405.
For tests the server can fail (any status, N times or until cleared), delay its answers,
stall (read requests and never answer), trickle (send each answer one byte at a time), or
go down (connections refused) and come back on the same port, from Python or CLI flags.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, quote, urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from tdx_boot_attest.tdxsim.errors import TdxSimError

log = logging.getLogger(__name__)

ROOT_CA_CRL_PATH = "/sgx/certification/v4/rootcacrl"
_FMSPC_RE = re.compile(r"^[0-9A-Fa-f]{12}$")
# A PCK CA's common name says which one it is ("Intel SGX PCK Platform CA", or a
# simulator's "... PCK Platform CA"); the value is the ``ca`` query parameter.
_CA_NAMES = {"platform": "PCK Platform CA", "processor": "PCK Processor CA"}


class PcsError(TdxSimError):
    """The PCS endpoint cannot be set up (bad collateral, bad listen address)."""

    reason = "pcs_invalid"


class CollateralSource(Protocol):
    """What the endpoint needs from a simulator state (tdxsim.state.SimState has it)."""

    @property
    def collateral_json(self) -> str: ...

    @property
    def fmspc(self) -> bytes: ...

    @property
    def root_ca_der(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class PcsCollateral:
    """The documents the endpoint serves, in the form Intel's PCS serves them."""

    fmspc: str
    ca: str | None
    tcb_info: str
    tcb_info_signature: bytes
    tcb_info_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes
    qe_identity_issuer_chain: str
    pck_crl: bytes
    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    root_crl_paths: tuple[str, ...] = ()

    @classmethod
    def from_collateral_json(
        cls, text: str, *, fmspc: bytes | str | None = None, root_ca_der: bytes | None = None
    ) -> PcsCollateral:
        """Build from dcap-qvl ``QuoteCollateralV3`` JSON; raises PcsError when malformed.

        ``fmspc`` defaults to the one named in the TCB info; ``root_ca_der`` gives the CRL
        distribution point paths at which the root CA CRL is also served.
        """
        try:
            doc = json.loads(text)
            tcb_info = str(doc["tcb_info"])
            if fmspc is None:
                fmspc_text = str(json.loads(tcb_info)["fmspc"])
            elif isinstance(fmspc, bytes):
                fmspc_text = fmspc.hex()
            else:
                fmspc_text = fmspc
            pck_crl = bytes.fromhex(doc["pck_crl"])
            collateral = cls(
                fmspc=fmspc_text.upper(),
                ca=_pck_ca_of(pck_crl),
                tcb_info=tcb_info,
                tcb_info_signature=bytes.fromhex(doc["tcb_info_signature"]),
                tcb_info_issuer_chain=str(doc["tcb_info_issuer_chain"]),
                qe_identity=str(doc["qe_identity"]),
                qe_identity_signature=bytes.fromhex(doc["qe_identity_signature"]),
                qe_identity_issuer_chain=str(doc["qe_identity_issuer_chain"]),
                pck_crl=pck_crl,
                pck_crl_issuer_chain=str(doc["pck_crl_issuer_chain"]),
                root_ca_crl=bytes.fromhex(doc["root_ca_crl"]),
                root_crl_paths=_crl_paths(root_ca_der) if root_ca_der else (),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PcsError(f"collateral JSON is not usable: {exc}") from None
        if not _FMSPC_RE.match(collateral.fmspc):
            raise PcsError(f"FMSPC {collateral.fmspc!r} is not 6 bytes of hex")
        return collateral

    @classmethod
    def from_state(cls, state: CollateralSource) -> PcsCollateral:
        """Build from a simulator state; raises PcsError when its collateral is malformed."""
        return cls.from_collateral_json(
            state.collateral_json, fmspc=state.fmspc, root_ca_der=state.root_ca_der
        )


def _pck_ca_of(pck_crl_der: bytes) -> str | None:
    """Which PCK CA ("platform"/"processor") issued the CRL; None when the name is neither."""
    crl = x509.load_der_x509_crl(pck_crl_der)
    names = [attr.value for attr in crl.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)]
    for ca, marker in _CA_NAMES.items():
        if any(isinstance(name, str) and name.endswith(marker) for name in names):
            return ca
    return None


def _crl_paths(root_ca_der: bytes) -> tuple[str, ...]:
    cert = x509.load_der_x509_certificate(root_ca_der)
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return ()
    paths: list[str] = []
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                path = urlsplit(name.value).path
                if path and path != "/":
                    paths.append(path)
    return tuple(paths)


@dataclass
class _Failure:
    status: int
    remaining: int | None  # None: until cleared
    path_prefix: str


@dataclass
class _Controls:
    lock: threading.Lock = field(default_factory=threading.Lock)
    failures: list[_Failure] = field(default_factory=list)
    delay: float = 0.0
    stalled: bool = False
    trickle: float = 0.0  # seconds between bytes; 0: answers go out whole
    # Set when stalls and trickles end (cleared or stopped): waiting handlers go on.
    released: threading.Event = field(default_factory=threading.Event)
    requests: list[str] = field(default_factory=list)
    # Open client connections: an outage must also cut kept-alive ones.
    connections: set[socket.socket] = field(default_factory=set)

    def next_failure(self, path: str) -> int | None:
        with self.lock:
            for failure in self.failures:
                if not path.startswith(failure.path_prefix):
                    continue
                if failure.remaining is None:
                    return failure.status
                if failure.remaining > 0:
                    failure.remaining -= 1
                    return failure.status
            return None


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()


def _route(collateral: PcsCollateral, path: str, query: dict[str, list[str]]) -> _Reply:
    """Map one GET to its reply (pure: no I/O)."""

    def param(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    if path == "/tdx/certification/v4/tcb":
        fmspc = param("fmspc")
        if fmspc is None or not _FMSPC_RE.match(fmspc):
            return _bad_request("fmspc must be 12 hexadecimal digits")
        if param("update") not in {None, "standard", "early"}:
            return _bad_request("update must be standard or early")
        if fmspc.upper() != collateral.fmspc:
            return _not_found(f"no TCB info for FMSPC {fmspc.upper()}")
        body = (
            f'{{"tcbInfo":{collateral.tcb_info},'
            f'"signature":"{collateral.tcb_info_signature.hex()}"}}'
        )
        return _Reply(
            200,
            body.encode(),
            "application/json",
            (("TCB-Info-Issuer-Chain", quote(collateral.tcb_info_issuer_chain, safe="")),),
        )
    if path == "/tdx/certification/v4/qe/identity":
        update = param("update")
        if update not in {None, "standard", "early"}:
            return _bad_request("update must be standard or early")
        body = (
            f'{{"enclaveIdentity":{collateral.qe_identity},'
            f'"signature":"{collateral.qe_identity_signature.hex()}"}}'
        )
        chain = quote(collateral.qe_identity_issuer_chain, safe="")
        return _Reply(
            200, body.encode(), "application/json", (("SGX-Enclave-Identity-Issuer-Chain", chain),)
        )
    if path == "/sgx/certification/v4/pckcrl":
        ca = param("ca")
        encoding = param("encoding") or "pem"
        if ca not in _CA_NAMES:
            return _bad_request("ca must be processor or platform")
        if encoding not in {"pem", "der"}:
            return _bad_request("encoding must be pem or der")
        if collateral.ca is not None and ca != collateral.ca:
            return _not_found(f"no PCK CRL for the {ca} CA")
        headers = (("SGX-PCK-CRL-Issuer-Chain", quote(collateral.pck_crl_issuer_chain, safe="")),)
        if encoding == "der":
            return _Reply(200, collateral.pck_crl, "application/pkix-crl", headers)
        return _Reply(200, _crl_pem(collateral.pck_crl), "application/x-pem-file", headers)
    if path == ROOT_CA_CRL_PATH:
        # A PCCS answers hex text here, also when a root certificate names this path as
        # its CRL distribution point: collateral fetchers try this path first.
        return _Reply(200, collateral.root_ca_crl.hex().encode(), "text/plain")
    if path in collateral.root_crl_paths:
        return _Reply(200, collateral.root_ca_crl, "application/pkix-crl")
    return _not_found(f"no resource at {path}")


def _crl_pem(der: bytes) -> bytes:
    import base64

    lines = base64.encodebytes(der).decode().replace("\n", "")
    wrapped = "\n".join(lines[i : i + 64] for i in range(0, len(lines), 64))
    return f"-----BEGIN X509 CRL-----\n{wrapped}\n-----END X509 CRL-----\n".encode()


def _bad_request(message: str) -> _Reply:
    return _Reply(
        400,
        message.encode(),
        headers=(("Error-Code", "InvalidParameter"), ("Error-Message", message)),
    )


def _not_found(message: str) -> _Reply:
    return _Reply(404, message.encode(), headers=(("Error-Message", message),))


class PcsServer:
    """The endpoint on ``host:port`` (port 0 picks a free one) in a background thread.

    Use as a context manager or call :meth:`start` / :meth:`stop`. Runtime controls for
    tests: :meth:`fail`, :meth:`set_delay`, :meth:`clear_faults`, :meth:`go_down`,
    :meth:`come_back`; :attr:`requests` lists the request targets served.
    """

    def __init__(
        self,
        collateral: PcsCollateral,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        refresh: Callable[[], PcsCollateral | None] | None = None,
    ) -> None:
        self._collateral = collateral
        # Called before each request; a new PcsCollateral replaces the served one (what a
        # PCCS does when its cache is refreshed). None keeps the current documents.
        self._refresh = refresh
        self.host = host
        self.port = port
        self._controls = _Controls()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()

    # -- life cycle -------------------------------------------------------------------------
    @property
    def collateral(self) -> PcsCollateral:
        """The documents currently served."""
        with self._controls.lock:
            return self._collateral

    @collateral.setter
    def collateral(self, collateral: PcsCollateral) -> None:
        self.set_collateral(collateral)

    def set_collateral(self, collateral: PcsCollateral) -> None:
        """Serve other documents from the next request on (e.g. re-issued). Raises nothing."""
        with self._controls.lock:
            self._collateral = collateral

    def _current_collateral(self) -> PcsCollateral:
        if self._refresh is not None:
            try:
                fresh = self._refresh()
            except TdxSimError as exc:
                log.warning("pcs: keeping the current collateral: %s", exc.message)
                fresh = None
            if fresh is not None:
                self.set_collateral(fresh)
        return self.collateral

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8081`` (what a PCCS URL setting takes)."""
        return f"http://{self.host}:{self.port}"

    @property
    def is_up(self) -> bool:
        """True while connections are accepted."""
        with self._state_lock:
            return self._server is not None

    def start(self) -> PcsServer:
        """Bind and serve; raises PcsError when the address cannot be bound."""
        with self._state_lock:
            if self._server is not None:
                return self
            try:
                server = ThreadingHTTPServer((self.host, self.port), self._handler_class())
            except OSError as exc:
                raise PcsError(f"cannot listen on {self.host}:{self.port}: {exc}") from None
            server.daemon_threads = True
            self.port = server.server_address[1]
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (connections are then refused). Raises nothing."""
        # Handlers waiting in a stall or a trickle go on (into closed connections).
        self._controls.released.set()
        with self._state_lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._controls.lock:
            connections = list(self._controls.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)

    def go_down(self) -> None:
        """Simulate an outage: refuse connections until :meth:`come_back`. Raises nothing."""
        self.stop()

    def come_back(self) -> None:
        """End an outage on the same port; raises PcsError if the port was taken meanwhile."""
        self.start()

    def __enter__(self) -> PcsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- faults -----------------------------------------------------------------------------
    def fail(self, status: int = 503, times: int | None = None, path_prefix: str = "/") -> None:
        """Answer ``status`` to the next ``times`` requests under ``path_prefix`` (None: all).

        Raises ValueError for a status outside 400-599 or times < 1.
        """
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error (400-599)")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        with self._controls.lock:
            self._controls.failures.append(_Failure(status, times, path_prefix))

    def set_delay(self, seconds: float) -> None:
        """Stall every response by ``seconds`` (0 disables); raises ValueError if negative."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        with self._controls.lock:
            self._controls.delay = seconds

    def stall(self) -> None:
        """Read every request but answer none until :meth:`clear_faults`. Raises nothing."""
        with self._controls.lock:
            self._controls.stalled = True
            self._controls.released.clear()

    def set_trickle(self, seconds_per_byte: float) -> None:
        """Send every answer one byte at a time, ``seconds_per_byte`` apart (0 disables).

        Raises ValueError if negative.
        """
        if seconds_per_byte < 0:
            raise ValueError("trickle interval must not be negative")
        with self._controls.lock:
            self._controls.trickle = seconds_per_byte
            self._controls.released.clear()

    def clear_faults(self) -> None:
        """Drop failures, delay, stall and trickle (waiting answers go out). Raises nothing."""
        with self._controls.lock:
            self._controls.failures.clear()
            self._controls.delay = 0.0
            self._controls.stalled = False
            self._controls.trickle = 0.0
            self._controls.released.set()

    @property
    def requests(self) -> list[str]:
        """Request targets (path and query) received so far, in order."""
        with self._controls.lock:
            return list(self._controls.requests)

    # -- HTTP -------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        current_collateral = self._current_collateral
        controls = self._controls

        class Handler(BaseHTTPRequestHandler):
            server_version = "tdxsim-pcs"
            sys_version = ""
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with controls.lock:
                    controls.connections.add(self.connection)

            def finish(self) -> None:
                with controls.lock:
                    controls.connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_GET(self) -> None:
                with controls.lock:
                    controls.requests.append(self.path)
                    delay = controls.delay
                    stalled = controls.stalled
                if delay:
                    time.sleep(delay)
                if stalled:
                    controls.released.wait()
                target = urlsplit(self.path)
                status = controls.next_failure(target.path)
                if status is not None:
                    self._send(_Reply(status, HTTPStatus(status).phrase.encode()))
                    return
                try:
                    query = parse_qs(target.query, keep_blank_values=True, strict_parsing=False)
                    reply = _route(current_collateral(), target.path, query)
                except ValueError:
                    reply = _bad_request("malformed query")
                self._send(reply)

            def _refuse_method(self) -> None:
                self._send(_Reply(405, b"only GET is served", headers=(("Allow", "GET"),)))

            do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_method

            def _send(self, reply: _Reply) -> None:
                headers = (
                    ("Content-Type", reply.content_type),
                    ("Content-Length", str(len(reply.body))),
                    ("Request-ID", uuid.uuid4().hex),
                    *reply.headers,
                )
                with controls.lock:
                    trickle = controls.trickle
                if trickle:
                    self._trickle(reply, headers, trickle)
                    return
                self.send_response(reply.status)
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)

            def _trickle(
                self, reply: _Reply, headers: tuple[tuple[str, str], ...], interval: float
            ) -> None:
                # The whole answer (status line and headers too), one byte at a time.
                self.log_request(reply.status)
                head = f"{self.protocol_version} {reply.status} {HTTPStatus(reply.status).phrase}"
                lines = [head, *(f"{name}: {value}" for name, value in headers), "", ""]
                data = "\r\n".join(lines).encode("latin-1") + reply.body
                for index in range(len(data)):
                    self.wfile.write(data[index : index + 1])
                    self.wfile.flush()
                    if controls.released.wait(interval):
                        self.wfile.write(data[index + 1 :])
                        return

            def log_message(self, format: str, *args: object) -> None:
                log.debug("pcs: " + format, *args)

        return Handler


# -- CLI ----------------------------------------------------------------------------------------
def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _failure_spec(text: str) -> tuple[int, int | None]:
    status, _, times = text.partition("*")
    try:
        code = int(status)
        count = int(times) if times else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STATUS[*N], got {text!r}") from None
    if not 400 <= code <= 599 or (count is not None and count < 1):
        raise argparse.ArgumentTypeError(f"expected STATUS 400-599 and N >= 1, got {text!r}")
    return code, count


def _outage_spec(text: str) -> tuple[float, float]:
    start, sep, duration = text.partition(":")
    try:
        values = (float(start), float(duration))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:DURATION seconds, got {text!r}") from None
    if not sep or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected START:DURATION seconds, got {text!r}")
    return values


class _StateWatcher:
    """Reloads a state directory's collateral when its files change on disk."""

    def __init__(self, path: Path, load: Callable[[Path], PcsCollateral]) -> None:
        self._path = path
        self._load = load
        self._seen: tuple[tuple[str, int, int], ...] = ()
        self._lock = threading.Lock()

    def _stamp(self) -> tuple[tuple[str, int, int], ...]:
        stamps = []
        for name in ("state.json", "collateral.json"):
            try:
                info = (self._path / name).stat()
            except OSError:
                continue
            stamps.append((name, info.st_mtime_ns, info.st_size))
        return tuple(stamps)

    def load(self) -> PcsCollateral:
        """Read the collateral now; raises StateError/PcsError."""
        with self._lock:
            self._seen = self._stamp()
            return self._load(self._path)

    def changed(self) -> PcsCollateral | None:
        """The collateral if the files changed since the last read, else None."""
        with self._lock:
            if self._stamp() == self._seen:
                return None
        return self.load()


def add_pcs_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``pcs`` subcommand (set_defaults(func=run)). Raises nothing."""
    parser = subparsers.add_parser(
        "pcs",
        help="serve the state's collateral at Intel PCS v4 paths (a PCCS for tests)",
        description="Serve TCB info, QE identity and CRLs like Intel PCS v4 / a PCCS. "
        "Prints the base URL once listening; runs until SIGTERM/SIGINT. Collateral "
        "re-issued in the state directory is served from the next request on.",
    )
    parser.add_argument("--state", required=True, help="simulator state directory")
    parser.add_argument(
        "--listen",
        type=_listen_address,
        default=("127.0.0.1", 8081),
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:8081; port 0 picks a free one)",
    )
    parser.add_argument(
        "--fail",
        type=_failure_spec,
        metavar="STATUS[*N]",
        help="answer STATUS (e.g. 503) to the first N requests (all without *N)",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="delay every response (s)")
    parser.add_argument(
        "--stall",
        action="store_true",
        help="accept connections and read requests, but never answer",
    )
    parser.add_argument(
        "--trickle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="send every answer one byte at a time, SECONDS apart",
    )
    parser.add_argument(
        "--outage",
        type=_outage_spec,
        metavar="START:DURATION",
        help="refuse connections from START s after start for DURATION s, then come back",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``tdxsim pcs``; returns the exit status. Raises PcsError / StateError."""
    from tdx_boot_attest.tdxsim.state import SimState

    watcher = _StateWatcher(
        Path(args.state), lambda path: PcsCollateral.from_state(SimState.load(path))
    )
    host, port = args.listen
    server = PcsServer(watcher.load(), host, port, refresh=watcher.changed)
    if args.fail:
        server.fail(args.fail[0], args.fail[1])
    if args.delay:
        server.set_delay(args.delay)
    if args.stall:
        server.stall()
    if args.trickle:
        server.set_trickle(args.trickle)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        del signum, frame
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    print(f"tdxsim pcs listening on {server.url}", flush=True)
    if args.outage:
        start, duration = args.outage
        if not stop.wait(start):
            server.go_down()
            # Printed once the socket is closed (and again once it listens), so a
            # watcher knows which state it is probing without guessing from timing.
            print(f"tdxsim pcs down for {duration:.1f} s", flush=True)
            if not stop.wait(duration):
                server.come_back()
                print(f"tdxsim pcs up again on {server.url}", flush=True)
    stop.wait()
    server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tdxsim.pcs pcs ...``: the same command without the full CLI."""
    parser = argparse.ArgumentParser(prog="tdxsim")
    subparsers = parser.add_subparsers(required=True)
    add_pcs_parser(subparsers)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
