"""Image administration: register, list, retire, rotate the sealed passphrase."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tdx_boot_attest.agent.eventlog import Event, event_to_json
from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.db.models import ANY_MEASUREMENT, Image
from tdx_boot_attest.server.errors import Conflict, NotFound, RequestInvalid, ServerError
from tdx_boot_attest.server.event_evidence import parse_event_log_field, replay_mismatches
from tdx_boot_attest.server.quote import RTMR_NAMES, TdQuote, parse_td_quote
from tdx_boot_attest.server.sealing import MasterKey

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")
MEASUREMENT_PATTERN = re.compile(r"^[0-9a-f]{96}$")
MIN_PASSPHRASE_BYTES = 1
MAX_PASSPHRASE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Profile:
    """An image's measurement values as lowercase hex (runtime RTMRs may be ``any``)."""

    mrtd: str
    boot_rtmrs: tuple[str, str, str, str]
    runtime_rtmrs: tuple[str, str, str, str]
    mrconfigid: str | None = None
    mrowner: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceEvents:
    """An image's expected event log and where it came from (e.g. a golden boot's log)."""

    events: tuple[Event, ...]
    source: str

    def to_json_text(self) -> str:
        """The events as stored in ``images.reference_events``. Raises ValueError."""
        return json.dumps([event_to_json(event) for event in self.events])


def reference_events_from_log(raw: bytes, quote: TdQuote, source: str) -> ReferenceEvents:
    """A golden boot's event log as reference events, checked against its own quote.

    Raises RequestInvalid(event_log_invalid) when the log does not parse, and
    RequestInvalid(event_log_mismatch) when its replay differs from the quote's RTMRs.
    """
    log = parse_event_log_field(raw).log
    wrong = replay_mismatches(log.events, quote.rtmrs)
    if wrong:
        raise RequestInvalid(
            f"the event log is not the quote's boot: {'; '.join(wrong)} in the quote",
            Reason.EVENT_LOG_MISMATCH,
        )
    return ReferenceEvents(log.events, source)


def check_reference_events(profile: Profile, reference: ReferenceEvents) -> None:
    """Refuse reference events whose replay differs from the image's boot RTMRs.

    Raises RequestInvalid(event_log_mismatch) naming each such register.
    """
    wrong = replay_mismatches(reference.events, profile.boot_rtmrs)
    if wrong:
        raise RequestInvalid(
            f"the reference events do not give the image's registers: {'; '.join(wrong)}",
            Reason.EVENT_LOG_MISMATCH,
        )


def normalise_measurement(name: str, value: str, *, allow_any: bool = False) -> str:
    """Lowercase 96-hex-character register value (or ``any``); raises RequestInvalid."""
    text = value.strip().lower().removeprefix("0x")
    if allow_any and text == ANY_MEASUREMENT:
        return ANY_MEASUREMENT
    if not MEASUREMENT_PATTERN.fullmatch(text):
        raise RequestInvalid(f"{name} must be 48 bytes as 96 hex characters")
    return text


def profile_from_quote(quote: TdQuote, *, include_config: bool = False) -> Profile:
    """A profile equal to the quote's measurements (a golden VM's quote). Raises nothing."""
    return Profile(
        mrtd=quote.mrtd,
        boot_rtmrs=quote.rtmrs,
        runtime_rtmrs=quote.rtmrs,
        mrconfigid=quote.mrconfigid if include_config else None,
        mrowner=quote.mrowner if include_config else None,
    )


def read_quote_file(data: bytes) -> TdQuote:
    """Parse a quote stored as raw bytes, hex text (optionally ``0x``) or base64 text.

    Raises RequestInvalid / AttestationRefused when it is not a TDX quote.
    """
    candidates = [data]
    text = data.strip()
    try:
        ascii_text = text.decode("ascii")
    except UnicodeDecodeError:
        ascii_text = ""
    if ascii_text:
        hex_text = ascii_text.removeprefix("0x")
        with contextlib.suppress(ValueError):
            candidates.insert(0, bytes.fromhex(hex_text))
        with contextlib.suppress(binascii.Error, ValueError):
            candidates.insert(0, base64.b64decode(ascii_text, validate=True))
    first_error: ServerError | None = None
    for candidate in candidates:
        try:
            return parse_td_quote(candidate)
        except ServerError as exc:
            first_error = first_error or exc
    raise first_error or RequestInvalid("quote file is empty")


def check_passphrase(passphrase: bytes) -> bytes:
    """The passphrase as stored: every byte, a trailing newline included, as
    ``cryptsetup --key-file`` reads a key file (so the volume formatted from the same file
    opens with the released key). Raises RequestInvalid for an empty or too long one."""
    value = passphrase
    if not MIN_PASSPHRASE_BYTES <= len(value) <= MAX_PASSPHRASE_BYTES:
        raise RequestInvalid(
            f"passphrase must be {MIN_PASSPHRASE_BYTES} to {MAX_PASSPHRASE_BYTES} bytes"
        )
    return value


def add_image(
    session: Session,
    master_key: MasterKey,
    name: str,
    profile: Profile,
    *,
    passphrase: bytes,
    now: datetime,
    reference: ReferenceEvents | None = None,
) -> Image:
    """Register an image (with its expected event log when ``reference`` is given).

    Raises RequestInvalid for a bad name or reference events that do not replay to the
    profile, Conflict if the name exists.
    """
    if reference is not None:
        check_reference_events(profile, reference)
    if not NAME_PATTERN.fullmatch(name):
        raise RequestInvalid(f"image name {name!r} is not allowed (letters, digits, ._:@+-)")
    if session.scalar(select(Image.id).where(Image.name == name)) is not None:
        raise Conflict(f"an image named {name!r} exists (retired names are not reused)")
    image = Image(
        name=name,
        mrtd=profile.mrtd,
        **{f"boot_{reg}": value for reg, value in zip(RTMR_NAMES, profile.boot_rtmrs, strict=True)},
        **{
            f"runtime_{reg}": value
            for reg, value in zip(RTMR_NAMES, profile.runtime_rtmrs, strict=True)
        },
        mrconfigid=profile.mrconfigid,
        mrowner=profile.mrowner,
        sealed_passphrase=master_key.seal(check_passphrase(passphrase), name),
        reference_events=reference.to_json_text() if reference is not None else None,
        reference_source=reference.source[:256] if reference is not None else None,
        created_at=now,
    )
    session.add(image)
    session.flush()
    return image


def get_image(session: Session, name: str) -> Image:
    """The image called ``name``; raises NotFound."""
    image = session.scalar(select(Image).where(Image.name == name))
    if image is None:
        raise NotFound(f"no image named {name!r}")
    return image


def list_images(session: Session, *, include_retired: bool = False) -> list[Image]:
    """Images ordered by name (active only unless ``include_retired``). Raises SQLAlchemy errors."""
    query = select(Image).order_by(Image.name)
    if not include_retired:
        query = query.where(Image.retired_at.is_(None))
    return list(session.scalars(query))


def retire_image(session: Session, name: str, now: datetime) -> Image:
    """Stop approving an image (its rows stay for audit); raises NotFound or Conflict."""
    image = get_image(session, name)
    if image.retired_at is not None:
        raise Conflict(f"image {name!r} is already retired")
    image.retired_at = now
    return image


def rotate_passphrase(
    session: Session, master_key: MasterKey, name: str, passphrase: bytes, now: datetime
) -> Image:
    """Replace the image's sealed passphrase; raises NotFound, Conflict or RequestInvalid."""
    image = get_image(session, name)
    if image.retired_at is not None:
        raise Conflict(f"image {name!r} is retired")
    image.sealed_passphrase = master_key.seal(check_passphrase(passphrase), name)
    image.passphrase_rotated_at = now
    return image
