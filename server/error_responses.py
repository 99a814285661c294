"""The HTTP answers of refusals and of unexpected failures, wherever a request is served."""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse

from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.db.availability import as_unavailable
from tdx_boot_attest.server.errors import ServerError, error_body

LOG = logging.getLogger("tdx_attest.server")


def refusal_response(refusal: ServerError) -> JSONResponse:
    """The answer to a deliberate refusal: its status, reason body and headers.

    Raises nothing.
    """
    return JSONResponse(
        error_body(refusal.reason, refusal.message, refusal.details),
        status_code=refusal.status_code,
        headers=refusal.headers,
    )


def unexpected_response(exc: Exception, retry_after: int) -> JSONResponse:
    """The answer to an exception no handler expected: 503 when it means the database is
    unavailable, else 500 with the traceback in the server log only. Raises nothing."""
    unavailable = as_unavailable(exc, retry_after)
    if unavailable is not None:
        return refusal_response(unavailable)
    # The traceback stays in the server log; the client learns nothing about internals.
    LOG.error("unexpected %s while handling a request", type(exc).__name__, exc_info=exc)
    return JSONResponse(error_body(Reason.INTERNAL_ERROR, "internal error"), status_code=500)
