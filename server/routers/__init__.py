"""One router module per resource; ``ROUTER_MODULES`` lists those the app mounts, in order."""

ROUTER_MODULES: tuple[str, ...] = ("server.routers.boot", "server.routers.servers")
