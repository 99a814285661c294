"""Measurement policy: match a quote's registers against every active image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.protocol import Reason
from server.db.models import ANY_MEASUREMENT, Image
from server.errors import AttestationRefused
from server.quote import RTMR_NAMES, TdQuote

BOOT_REGISTERS = ("mrtd", *RTMR_NAMES)


@dataclass(frozen=True, slots=True)
class ImageMatch:
    """The image a quote matched."""

    image: Image


def boot_profile(image: Image) -> dict[str, str | None]:
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


def runtime_profile(image: Image) -> dict[str, str | None]:
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


def match_image(quote: TdQuote, images: Sequence[Image], *, runtime: bool = False) -> ImageMatch:
    """The first active image whose profile the quote matches.

    Raises AttestationRefused(no_image_registered) when there is no active image and
    AttestationRefused(measurement_mismatch) naming the registers that differ from the
    closest image otherwise.
    """
    if not images:
        raise AttestationRefused("no approved image is registered", Reason.NO_IMAGE_REGISTERED)
    closest: tuple[list[str], Image] | None = None
    for image in images:
        profile = runtime_profile(image) if runtime else boot_profile(image)
        differing = differing_registers(quote, profile)
        if not differing:
            return ImageMatch(image=image)
        if closest is None or len(differing) < len(closest[0]):
            closest = (differing, image)
    registers, image = closest if closest is not None else ([], images[0])
    verb = "differs" if len(registers) == 1 else "differ"
    raise AttestationRefused(
        f"{', '.join(registers)} {verb} from every approved image (closest: {image.name})",
        Reason.MEASUREMENT_MISMATCH,
    )
