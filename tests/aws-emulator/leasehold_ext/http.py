"""The control endpoint: JSON over HTTP under `/_leasehold/` on the emulator's own port."""

from __future__ import annotations

import json
from typing import Any, Callable
from urllib.parse import parse_qs

from . import control, elasticache, memorydb, mirror

PREFIX = "/_leasehold/"


def _mirror_info(kind: str, resource_id: str) -> dict[str, Any] | None:
    m = elasticache.mirror_of(kind, resource_id) or memorydb.mirror_of(kind, resource_id)
    if m is None:
        return None
    return {
        "host": "127.0.0.1",
        "port": m.port,
        "url": m.url(),
        "admin_user": mirror.ADMIN_USER,
        "admin_password": m.admin_password,
    }


def handle(method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
    route = path[len(PREFIX):].strip("/")
    if route == "health":
        import moto

        return 200, {"ok": True, "moto": moto.__version__, "mirror": mirror.available()}
    if route == "faults":
        if method == "POST":
            return 200, control.add_fault(body or {}).to_dict()
        if method == "DELETE":
            removed = control.clear_faults(
                query.get("operation"), query.get("resource"), query.get("service")
            )
            return 200, {"cleared": len(removed), "faults": [f.to_dict() for f in removed]}
        if method == "GET":
            with control.LOCK:
                return 200, {"faults": [f.to_dict() for f in control.STATE.faults]}
    if route == "calls" and method == "GET":
        op = query.get("operation")
        if op:
            return 200, {
                "operation": op,
                "resource": query.get("resource"),
                "count": control.call_count(op, query.get("resource"), query.get("service")),
            }
        return 200, {"calls": control.all_calls()}
    if route == "timing" and method == "POST":
        body = body or {}
        control.set_duration(body.get("kind", ""), body.get("id"), float(body.get("seconds", -1)))
        return 200, {"ok": True}
    if route == "mirror" and method == "GET":
        info = _mirror_info(query.get("kind", ""), query.get("id", ""))
        if info is None:
            return 404, {"error": "no mirror for that resource"}
        return 200, info
    if route == "reset" and method == "POST":
        control.reset()
        return 200, {"ok": True}
    return 404, {"error": f"unknown control route {method} {path}"}


def wrap(app: Callable) -> Callable:
    """WSGI middleware: serve `/_leasehold/...` here, pass everything else to moto."""

    def middleware(environ: dict[str, Any], start_response: Callable):
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX):
            return app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else None
            status, payload = handle(method, path, query, body)
        except (ValueError, TypeError, KeyError) as e:
            status, payload = 400, {"error": str(e)}
        data = json.dumps(payload, default=str).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
        start_response(
            f"{status} {reason}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]

    return middleware
