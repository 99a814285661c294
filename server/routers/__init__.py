"""One router module per resource; ``ROUTER_MODULES`` lists those the app mounts, in order."""

ROUTER_MODULES: tuple[str, ...] = (
    "tdx_boot_attest.server.routers.boot",
    "tdx_boot_attest.server.routers.servers",
)
