"""DCAP collateral: parsing its validity window and fetching it from a PCCS / Intel PCS (v4 API).

The fetcher is injected (``CollateralFetcher``) so tests can point it at a simulator or
replace it; the database cache lives in ``server.collateral_cache``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import unquote

import dcap_qvl
import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.errors import ServerError

COLLATERAL_FIELDS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)
TCB_ISSUER_HEADERS = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
QE_ISSUER_HEADERS = ("SGX-Enclave-Identity-Issuer-Chain",)
PCK_CRL_ISSUER_HEADERS = ("SGX-PCK-CRL-Issuer-Chain",)
HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
API_SUFFIXES = ("/sgx/certification/v4", "/tdx/certification/v4")


class CollateralError(ServerError):
    """Collateral could not be fetched or is unusable; ``reason`` is collateral_unavailable."""

    default_reason = Reason.COLLATERAL_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Collateral:
    """dcap-qvl ``QuoteCollateralV3`` JSON plus the facts the cache needs about it."""

    json_text: str
    fmspc: str
    ca: str
    issued_at: datetime
    next_update: datetime

    def valid_at(self, now: datetime) -> bool:
        """True when every part of the collateral is issued and not yet past its nextUpdate."""
        return self.issued_at <= now < self.next_update

    def for_dcap(self) -> dcap_qvl.QuoteCollateralV3:
        """The dcap-qvl object; raises CollateralError when dcap-qvl rejects the JSON."""
        try:
            return dcap_qvl.QuoteCollateralV3.from_json(self.json_text)
        except ValueError as exc:
            raise CollateralError(f"collateral is not valid dcap-qvl JSON: {exc}") from None


class CollateralFetcher(Protocol):
    """Fetches collateral JSON (dcap-qvl layout) for a platform's FMSPC and PCK CA."""

    def __call__(self, fmspc: str, ca: str) -> str:
        """Return collateral JSON; raises CollateralError when it cannot be had."""
        ...


def parse_collateral(text: str) -> Collateral:
    """Read a dcap-qvl collateral JSON document and work out its validity window.

    The window is [latest issue date, earliest nextUpdate] over the TCB info, the QE
    identity and both CRLs. Raises CollateralError when the document is unusable.
    """
    try:
        doc = json.loads(text)
    except ValueError:
        raise CollateralError("collateral is not JSON") from None
    if not isinstance(doc, dict) or set(COLLATERAL_FIELDS) - set(doc):
        missing = sorted(set(COLLATERAL_FIELDS) - set(doc)) if isinstance(doc, dict) else []
        raise CollateralError(f"collateral lacks fields: {', '.join(missing) or 'all'}")
    try:
        dcap_qvl.QuoteCollateralV3.from_json(text)
        tcb_info = json.loads(doc["tcb_info"])
        qe_identity = json.loads(doc["qe_identity"])
        pck_crl = x509.load_der_x509_crl(bytes.fromhex(doc["pck_crl"]))
        root_crl = x509.load_der_x509_crl(bytes.fromhex(doc["root_ca_crl"]))
        issued = [
            _parse_time(tcb_info["issueDate"]),
            _parse_time(qe_identity["issueDate"]),
            pck_crl.last_update_utc,
            root_crl.last_update_utc,
        ]
        crl_next = [pck_crl.next_update_utc, root_crl.next_update_utc]
        if any(moment is None for moment in crl_next):
            raise CollateralError("a CRL in the collateral has no nextUpdate")
        expiries = [
            _parse_time(tcb_info["nextUpdate"]),
            _parse_time(qe_identity["nextUpdate"]),
            *[m for m in crl_next if m is not None],
        ]
        fmspc = str(tcb_info["fmspc"]).lower()
        ca = _pck_ca_name(pck_crl)
    except CollateralError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise CollateralError(f"collateral is malformed: {type(exc).__name__}") from None
    return Collateral(
        json_text=text,
        fmspc=fmspc,
        ca=ca,
        issued_at=max(issued),
        next_update=min(expiries),
    )


def _parse_time(text: Any) -> datetime:
    return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _pck_ca_name(crl: x509.CertificateRevocationList) -> str:
    names = crl.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    common_name = str(names[0].value).lower() if names else ""
    return "processor" if "processor" in common_name else "platform"


class CollateralNotFound(CollateralError):
    """The collateral service has no collateral for this platform (FMSPC or PCK CA)."""


class PcsCollateralFetcher:
    """Fetches collateral from a PCCS or Intel PCS speaking the v4 API over HTTP(S).

    ``timeout`` bounds the whole fetch (every request, connection and byte of it), not
    each read: a service that answers one byte at a time cannot hold it longer.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        for suffix in API_SUFFIXES:
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        self.base_url = base
        self.timeout = timeout
        self._transport = transport

    def __call__(self, fmspc: str, ca: str) -> str:
        """Fetch TCB info, QE identity and both CRLs; return dcap-qvl JSON.

        Blocking (runs its own event loop): call it on a worker thread. Raises
        CollateralNotFound when the service has nothing for the platform, CollateralError
        when it is unreachable, answers badly or not within ``timeout`` seconds.
        """
        try:
            return asyncio.run(asyncio.wait_for(self._fetch(fmspc, ca), self.timeout))
        except TimeoutError:
            raise CollateralError(
                f"collateral service {self.base_url} did not deliver within {self.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise CollateralError(
                f"collateral service {self.base_url} unreachable: {type(exc).__name__}"
            ) from None

    async def _fetch(self, fmspc: str, ca: str) -> str:
        async with httpx.AsyncClient(
            timeout=self.timeout, transport=self._transport, follow_redirects=True
        ) as client:
            tcb = await self._get(client, "/tdx/certification/v4/tcb", {"fmspc": fmspc.upper()})
            tcb_info, tcb_sig = _signed_body(tcb.text, "tcbInfo")
            qe = await self._get(client, "/tdx/certification/v4/qe/identity", {})
            qe_identity, qe_sig = _signed_body(qe.text, "enclaveIdentity")
            crl = await self._get(
                client, "/sgx/certification/v4/pckcrl", {"ca": ca, "encoding": "der"}
            )
            pck_crl_chain = _issuer_chain(crl, PCK_CRL_ISSUER_HEADERS)
            root_crl = await self._root_ca_crl(client, pck_crl_chain)
        return json.dumps(
            {
                "pck_crl_issuer_chain": pck_crl_chain,
                "root_ca_crl": root_crl.hex(),
                "pck_crl": _crl_der(crl.content).hex(),
                "tcb_info_issuer_chain": _issuer_chain(tcb, TCB_ISSUER_HEADERS),
                "tcb_info": tcb_info,
                "tcb_info_signature": tcb_sig,
                "qe_identity_issuer_chain": _issuer_chain(qe, QE_ISSUER_HEADERS),
                "qe_identity": qe_identity,
                "qe_identity_signature": qe_sig,
            }
        )

    async def _get(
        self, client: httpx.AsyncClient, path: str, params: dict[str, str]
    ) -> httpx.Response:
        response = await client.get(self.base_url + path, params=params)
        if response.status_code == 404 and path != "/tdx/certification/v4/qe/identity":
            raise CollateralNotFound(f"collateral service has no {path} for this platform (404)")
        if response.status_code != 200:
            raise CollateralError(f"collateral service answered {response.status_code} for {path}")
        return response

    async def _root_ca_crl(self, client: httpx.AsyncClient, pck_crl_chain: str) -> bytes:
        response = await client.get(self.base_url + "/sgx/certification/v4/rootcacrl")
        if response.status_code == 200:
            return _crl_der(response.content)
        # Intel's PCS does not serve the root CA CRL; the root certificate names where it is.
        url = _root_crl_distribution_point(pck_crl_chain)
        response = await client.get(url)
        if response.status_code != 200:
            raise CollateralError(f"root CA CRL answered {response.status_code}")
        return _crl_der(response.content)


def _issuer_chain(response: httpx.Response, names: tuple[str, ...]) -> str:
    for name in names:
        value = response.headers.get(name)
        if value:
            return unquote(value)
    raise CollateralError(f"collateral response lacks the {names[0]} header")


def _signed_body(text: str, key: str) -> tuple[str, str]:
    """The raw JSON text of ``key`` (its signature covers those exact bytes) and the signature."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    try:
        index = _skip_ws(text, 0)
        if text[index] != "{":
            raise ValueError("not an object")
        index = _skip_ws(text, index + 1)
        while text[index] != "}":
            name, index = decoder.raw_decode(text, index)
            index = _skip_ws(text, index)
            if text[index] != ":":
                raise ValueError("expected ':'")
            start = _skip_ws(text, index + 1)
            _, end = decoder.raw_decode(text, start)
            spans[str(name)] = (start, end)
            index = _skip_ws(text, end)
            if text[index] == ",":
                index = _skip_ws(text, index + 1)
        signature = json.loads(text[slice(*spans["signature"])])
        body = text[slice(*spans[key])]
        bytes.fromhex(signature)
    except (ValueError, KeyError, IndexError, TypeError):
        raise CollateralError(f"collateral response has no signed {key}") from None
    return body, str(signature)


def _skip_ws(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _crl_der(body: bytes) -> bytes:
    """A CRL as DER whether it came as DER, PEM or hex text. Raises CollateralError."""
    # Whitespace is only trimmed from the text forms: a DER body may end in a byte
    # that looks like whitespace (the last byte of its signature).
    stripped = body.strip()
    try:
        if stripped.startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(stripped).public_bytes(Encoding.DER)
        if stripped and all(c in HEX_DIGITS for c in stripped):
            candidate = bytes.fromhex(stripped.decode("ascii"))
            x509.load_der_x509_crl(candidate)
            return candidate
        x509.load_der_x509_crl(body)
        return body
    except ValueError:
        raise CollateralError("collateral service sent a CRL that cannot be read") from None


def _root_crl_distribution_point(chain_pem: str) -> str:
    try:
        certificates = x509.load_pem_x509_certificates(chain_pem.encode("ascii"))
        root = certificates[-1]
        points = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        for point in points:
            for name in point.full_name or []:
                if isinstance(name, x509.UniformResourceIdentifier):
                    return str(name.value)
    except (ValueError, x509.ExtensionNotFound, IndexError):
        pass
    raise CollateralError("no root CA CRL: the service has none and the root names none")
