#!/usr/bin/env python3
"""Run moto as a server on loopback with the leasehold extension installed.

    python server.py --port 5055 [--host 127.0.0.1] [--parent-pid PID]

Prints `leasehold-emulator ready on http://HOST:PORT` once it answers. Exits by itself when its
parent process goes away (so a killed test run leaves nothing behind), and stops every Redis
mirror it started on the way out.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import leasehold_ext  # noqa: E402
from leasehold_ext import hooks, http, mirror  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=os.getppid(),
        help="exit when this process is gone (default: the parent)",
    )
    args = parser.parse_args()

    # Static test credentials are all moto needs; make sure nothing real is picked up.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    # One log line per request would only fill the caller's log file.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    leasehold_ext.install()

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class Server(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = http.wrap(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    server = Server(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    print(f"leasehold-emulator ready on http://{args.host}:{args.port}", flush=True)

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = args.parent_pid
    original_ppid = os.getppid()

    def parent_alive() -> bool:
        # Reparenting means the process that started us is gone.
        if os.getppid() != original_ppid:
            return False
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    while not stop.wait(0.25):
        hooks.tick()
        if not parent_alive():
            break
    mirror.stop_all()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
