"""One router module per resource; ``ROUTERS`` lists those the app mounts, in order."""

from fastapi import APIRouter

from tdx_boot_attest.server.routers import boot, servers

ROUTERS: tuple[APIRouter, ...] = (boot.router, servers.router)
