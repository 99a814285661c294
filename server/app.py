"""The FastAPI application factory: routers, dependencies, error bodies, /metrics."""

from __future__ import annotations

from functools import partial
from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from tdx_boot_attest.agent.protocol import Reason
from tdx_boot_attest.server.body_limit import BodyLimit
from tdx_boot_attest.server.clock import Clock, system_clock
from tdx_boot_attest.server.collateral import CollateralFetcher
from tdx_boot_attest.server.context import ServerContext
from tdx_boot_attest.server.dependencies import get_context
from tdx_boot_attest.server.error_responses import refusal_response, unexpected_response
from tdx_boot_attest.server.errors import ServerError, error_body
from tdx_boot_attest.server.health import Readiness
from tdx_boot_attest.server.log_setup import configure_logging, tune_garbage_collector
from tdx_boot_attest.server.routers import ROUTERS
from tdx_boot_attest.server.routers.boot_fast_path import BootFastPath
from tdx_boot_attest.server.settings import Settings

DOCS_STATIC_PATH = "/docs/static"
# Bodies larger than this are refused before parsing: a quote is at most 64 KiB and an event
# log at most 256 KiB, together about 430 KiB as base64.
MAX_BODY_BYTES = 512 * 1024
_STATUS_REASONS = {
    401: Reason.UNAUTHENTICATED,
    403: Reason.FORBIDDEN,
    404: Reason.NOT_FOUND,
    409: Reason.CONFLICT,
    429: Reason.RATE_LIMITED,
}


class VerifierApp(FastAPI):
    """The application, with the boot endpoints' fast path in front of all of it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_path = BootFastPath(partial(FastAPI.__call__, self), self.state, MAX_BODY_BYTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection: ordinary boot requests by BootFastPath, the rest by
        the framework. Raises what the framework raises."""
        await self.fast_path(scope, receive, send)


def create_app(
    settings: Settings,
    clock: Clock | None = None,
    collateral_fetcher: CollateralFetcher | None = None,
    *,
    engine: Engine | None = None,
) -> FastAPI:
    """Build the server application.

    Raises ConfigurationError when the settings, master key or trust root are unusable.
    """
    ctx = ServerContext.build(settings, clock or system_clock, collateral_fetcher, engine)
    app = VerifierApp(
        title="tdx-boot-attest verifier",
        version="1",
        description="Attestation-gated LUKS key release for Intel TDX VMs (Servers API).",
        # FastAPI's own pages load their scripts from a CDN: blank at an air-gapped site.
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    add_api_docs(app)
    for router in ROUTERS:
        app.include_router(router)
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_api_route("/metrics", _metrics_endpoint(ctx), methods=["GET"], include_in_schema=False)
    app.add_api_route("/healthz", _health, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/readyz", _readiness_endpoint(Readiness(ctx)), methods=["GET"], include_in_schema=False
    )
    return app


def add_api_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /docs with its scripts and styles from the swagger-ui-bundle
    package (under /docs/static), so the page needs nothing but this server.

    Raises nothing.
    """
    app.mount(
        DOCS_STATIC_PATH,
        StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
        name="swagger-ui",
    )

    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} API",
            swagger_js_url=f"{root}{DOCS_STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC_PATH}/favicon-32x32.png",
        )

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)


def create_app_from_environment() -> FastAPI:
    """The app with settings from ``TDX_ATTEST_*`` (uvicorn worker processes use this).

    Raises ConfigurationError like create_app.
    """
    settings = Settings.load()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    tune_garbage_collector()
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServerError)
    async def server_error(_request: Request, exc: ServerError) -> JSONResponse:
        return refusal_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body(Reason.REQUEST_INVALID, _describe_validation(exc)), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = _STATUS_REASONS.get(exc.status_code, Reason.REQUEST_INVALID)
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        # FastAPI answers a body it cannot decode (e.g. not UTF-8) with 400: malformed
        # input is a 422 here, like every other validation failure.
        status = 422 if exc.status_code == 400 else exc.status_code
        return JSONResponse(
            error_body(reason, message),
            status_code=status,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_response(exc, get_context(request).settings.database_retry_after_seconds)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        location = [str(item) for item in error.get("loc", ()) if item != "body"]
        field = ".".join(location) or "body"
        parts.append(f"{field}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "request is invalid"


def _metrics_endpoint(ctx: ServerContext) -> Any:
    def metrics() -> Response:
        # What this process holds in memory: a scrape never waits on the database.
        now = ctx.clock()
        for entry in ctx.collateral.held():
            labels = (entry.fmspc, entry.ca)
            ctx.metrics.collateral_age.labels(*labels).set((now - entry.issued_at).total_seconds())
            ctx.metrics.collateral_remaining.labels(*labels).set(
                (entry.next_update - now).total_seconds()
            )
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


async def _health() -> dict[str, str]:
    # Liveness: answered by the event loop alone, whatever the database does.
    return {"status": "ok"}


def _readiness_endpoint(readiness: Readiness) -> Any:
    async def ready() -> JSONResponse:
        is_ready, body = await readiness.report()
        return JSONResponse(body, status_code=200 if is_ready else 503)

    return ready
