"""Measurement policy: match a quote's registers against every active image."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tdx_boot_attest.agent.eventlog import Event, event_from_json
from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.db.models import ANY_MEASUREMENT, Image
from tdx_boot_attest.server.errors import AttestationRefused
from tdx_boot_attest.server.event_diff import Difference, explain, mismatch_message
from tdx_boot_attest.server.quote import RTMR_NAMES, TdQuote


class ImageRecord(Protocol):
    """What policy reads of an image: an ORM ``Image`` or an ``ApprovedImage`` snapshot."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def mrtd(self) -> str: ...
    @property
    def boot_rtmr0(self) -> str: ...
    @property
    def boot_rtmr1(self) -> str: ...
    @property
    def boot_rtmr2(self) -> str: ...
    @property
    def boot_rtmr3(self) -> str: ...
    @property
    def runtime_rtmr0(self) -> str: ...
    @property
    def runtime_rtmr1(self) -> str: ...
    @property
    def runtime_rtmr2(self) -> str: ...
    @property
    def runtime_rtmr3(self) -> str: ...
    @property
    def mrconfigid(self) -> str | None: ...
    @property
    def mrowner(self) -> str | None: ...
    @property
    def sealed_passphrase(self) -> bytes: ...
    @property
    def reference_events(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class ApprovedImage:
    """A read-only snapshot of an active image row (no ORM session needed)."""

    id: int
    name: str
    mrtd: str
    boot_rtmr0: str
    boot_rtmr1: str
    boot_rtmr2: str
    boot_rtmr3: str
    runtime_rtmr0: str
    runtime_rtmr1: str
    runtime_rtmr2: str
    runtime_rtmr3: str
    mrconfigid: str | None
    mrowner: str | None
    sealed_passphrase: bytes
    reference_events: str | None


APPROVED_IMAGE_COLUMNS = tuple(getattr(Image, name) for name in ApprovedImage.__slots__)


@dataclass(frozen=True, slots=True)
class ImageMatch:
    """The image a quote matched."""

    image: ImageRecord


def boot_profile(image: ImageRecord) -> dict[str, str | None]:
    """Register name -> expected hex (None: not checked) for the boot measurement set."""
    return {
        "mrtd": image.mrtd,
        "rtmr0": image.boot_rtmr0,
        "rtmr1": image.boot_rtmr1,
        "rtmr2": image.boot_rtmr2,
        "rtmr3": image.boot_rtmr3,
        "mrconfigid": image.mrconfigid,
        "mrowner": image.mrowner,
    }


def runtime_profile(image: ImageRecord) -> dict[str, str | None]:
    """Register name -> expected hex for the runtime set (``any`` registers are not checked)."""
    profile = boot_profile(image)
    for index, name in enumerate(RTMR_NAMES):
        value = getattr(image, f"runtime_rtmr{index}")
        profile[name] = None if value == ANY_MEASUREMENT else value
    return profile


def differing_registers(quote: TdQuote, profile: dict[str, str | None]) -> list[str]:
    """Names of the registers whose quoted value differs from ``profile``. Raises nothing."""
    actual = {**quote.measurements(), "mrconfigid": quote.mrconfigid, "mrowner": quote.mrowner}
    return [
        name
        for name, expected in profile.items()
        if expected is not None and expected != ANY_MEASUREMENT and actual[name] != expected
    ]


def reference_events(image: ImageRecord) -> list[Event]:
    """The image's expected events (empty when none are registered).

    Raises ValueError when the stored JSON is damaged (registration validates it, so
    that is a database fault).
    """
    if not image.reference_events:
        return []
    data = json.loads(image.reference_events)
    if not isinstance(data, list):
        raise ValueError(f"image {image.name}: reference events are not a list")
    return [event_from_json(item, n) for n, item in enumerate(data)]


def explain_mismatch(
    registers: list[str], image: ImageRecord, events: Sequence[Event] | None
) -> tuple[str, list[Difference]] | None:
    """A message and the differences naming the events behind ``registers``, when both
    the attempt and ``image`` have events; None otherwise. Raises ValueError (see
    reference_events).
    """
    approved = reference_events(image)
    if not events or not approved:
        return None
    differences, unexplained = explain(registers, events, approved)
    return mismatch_message(registers, image.name, differences, unexplained), differences


def match_image(
    quote: TdQuote,
    images: Sequence[ImageRecord],
    *,
    events: Sequence[Event] | None = None,
) -> ImageMatch:
    """The first active image whose profile the quote matches.

    Raises AttestationRefused(no_image_registered) when there is no active image and
    AttestationRefused(measurement_mismatch) otherwise: it names the registers that
    differ from the closest image and, when the attempt's event log (``events``) and
    that image's reference events are both known, the events that differ (also as
    ``differences`` in the refusal's details).
    """
    if not images:
        raise AttestationRefused("no approved image is registered", Reason.NO_IMAGE_REGISTERED)
    closest: tuple[list[str], ImageRecord] | None = None
    for image in images:
        differing = differing_registers(quote, boot_profile(image))
        if not differing:
            return ImageMatch(image=image)
        if closest is None or len(differing) < len(closest[0]):
            closest = (differing, image)
    registers, image = closest if closest is not None else ([], images[0])
    raise mismatch_refusal(registers, image, events, every_image=True)


def mismatch_refusal(
    registers: list[str],
    image: ImageRecord,
    events: Sequence[Event] | None,
    *,
    every_image: bool,
) -> AttestationRefused:
    """The measurement_mismatch refusal for ``registers`` differing from ``image``.

    ``every_image``: the quote was held against every active image (boot), not only one
    (runtime). Raises ValueError (see reference_events).
    """
    explained = explain_mismatch(registers, image, events)
    if explained is not None:
        message, differences = explained
        details = {"differences": [d.to_json() for d in differences], "image": image.name}
        return AttestationRefused(message, Reason.MEASUREMENT_MISMATCH, details=details)
    verb = "differs" if len(registers) == 1 else "differ"
    where = (
        f"every approved image (closest: {image.name})"
        if every_image
        else f"the runtime measurements of image {image.name}"
    )
    return AttestationRefused(
        f"{', '.join(registers)} {verb} from {where}", Reason.MEASUREMENT_MISMATCH
    )
