"""Serving with several worker processes, each accepting on its own SO_REUSEPORT socket.

Worker processes sharing one listening socket take connections greedily: under a burst
the first to wake accepts most of them, and the interpreter lock keeps each process on
one core, so one core works through a long queue while the other idles. With one
listening socket per worker, all bound to the same port (SO_REUSEPORT), the kernel
spreads new connections evenly across the workers. A worker that dies is started again
on its socket; one that fails while starting stops the server.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
import time
from collections.abc import Mapping
from multiprocessing.process import BaseProcess
from typing import Any

LOG = logging.getLogger("tdx_attest.server")
BACKLOG = 2048
# A worker that ends this soon after starting failed to start: restarting it would loop.
START_GRACE_SECONDS = 10.0
SUPERVISE_INTERVAL_SECONDS = 0.5
STOP_TIMEOUT_SECONDS = 30.0


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on ``host:port`` sharing the port (SO_REUSEPORT).

    Port 0 takes a free port for the first and the same for the others. Raises OSError
    when the address cannot be bound.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            address = (address[0], sock.getsockname()[1], *address[2:])
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def run_workers(sockets: list[socket.socket], uvicorn_options: Mapping[str, Any]) -> int:
    """Serve the app in one process per socket until SIGTERM or SIGINT; returns the status.

    Each worker builds the app from the environment (server.app) and runs uvicorn on its
    own socket. Raises nothing: a worker that fails while starting ends the server with
    status 1.
    """
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    context = multiprocessing.get_context("spawn")
    options = dict(uvicorn_options)
    workers: list[tuple[BaseProcess, float]] = []
    for sock in sockets:
        workers.append(_start(context, sock, options))
    status = 0
    while not stop.wait(SUPERVISE_INTERVAL_SECONDS):
        for index, (process, started) in enumerate(workers):
            if process.is_alive():
                continue
            exitcode = process.exitcode or 0
            # An error exit soon after starting is a start failure (a signal is not).
            if time.monotonic() - started < START_GRACE_SECONDS and exitcode > 0:
                LOG.error(
                    "worker %s failed while starting (exit %s)", process.pid, process.exitcode
                )
                status = 1
                stop.set()
                break
            LOG.warning(
                "worker %s ended (exit %s): starting another", process.pid, process.exitcode
            )
            workers[index] = _start(context, sockets[index], options)
    _stop_all([process for process, _ in workers])
    return status


def _start(context: Any, sock: socket.socket, options: dict[str, Any]) -> tuple[BaseProcess, float]:
    process: BaseProcess = context.Process(target=_serve_one, args=(sock, options), daemon=False)
    process.start()
    return process, time.monotonic()


def _stop_all(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def _serve_one(sock: socket.socket, options: dict[str, Any]) -> None:  # pragma: no cover
    """A worker process: the app from the environment, uvicorn on ``sock``."""
    import uvicorn

    from tdx_boot_attest.server.app import create_app_from_environment

    config = uvicorn.Config(create_app_from_environment(), **options)
    uvicorn.Server(config).run(sockets=[sock])
