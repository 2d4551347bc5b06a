"""The hook every AWS call passes through: finish due transitions, count the call, and apply
an injected fault (latency and/or an AWS error) before moto sees it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from moto.core.responses import BaseResponse

from . import control, elasticache, memorydb

# Request parameters that name the resource a call is about, most specific first.
RESOURCE_PARAMS = (
    "UserGroupId",
    "ACLName",
    "ReplicationGroupId",
    "ServerlessCacheName",
    "ClusterName",
    "UserId",
    "UserName",
    "RoleArn",
    "PolicyArn",
    "AccessKeyId",
)


def tick() -> None:
    with control.LOCK:
        elasticache.tick()
        memorydb.tick()


def _params(resp: BaseResponse) -> dict[str, Any]:
    out: dict[str, Any] = {}
    qs = getattr(resp, "querystring", None) or {}
    for k, v in qs.items():
        out[k] = v[0] if isinstance(v, list) and v else v
    body = getattr(resp, "body", None)
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str) and body.lstrip().startswith("{"):
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                out.update(parsed)
        except ValueError:
            pass
    return out


def resource_of(resp: BaseResponse) -> str | None:
    params = _params(resp)
    for key in RESOURCE_PARAMS:
        value = params.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _is_json(resp: BaseResponse) -> bool:
    headers = resp.headers or {}
    ctype = headers.get("Content-Type") or headers.get("content-type") or ""
    return "json" in ctype or bool(headers.get("X-Amz-Target") or headers.get("x-amz-target"))


def fault_response(resp: BaseResponse, fault: control.Fault):
    code = fault.error_code or "InternalFailure"
    message = fault.message or f"{code} injected by the leasehold emulator"
    request_id = str(uuid.uuid4())
    if _is_json(resp):
        body = json.dumps({"__type": code, "message": message})
        headers = {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amzn-ErrorType": code,
            "x-amzn-RequestId": request_id,
        }
    else:
        body = (
            '<ErrorResponse xmlns="https://leasehold.invalid/emulator/">'
            f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        headers = {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}
    return fault.status, headers, body


def install() -> None:
    original = BaseResponse.call_action

    def call_action(self: BaseResponse):
        tick()
        operation = self._get_action() or ""
        service = self.service_name or ""
        resource = resource_of(self)
        fault = control.record_call(service, operation, resource)
        if fault is not None:
            if fault.latency_ms > 0:
                time.sleep(fault.latency_ms / 1000.0)
            if fault.error_code is not None:
                control.record_outcome(service, operation, resource, accepted=False)
                return fault_response(self, fault)
        # One lock for all handlers: the extension's state machines are not thread safe.
        with control.LOCK:
            try:
                result = original(self)
            except Exception:
                control.record_outcome(service, operation, resource, accepted=False)
                raise
        status = result[0] if isinstance(result, tuple) and result else 200
        ok = not (isinstance(status, int) and status >= 400)
        control.record_outcome(service, operation, resource, accepted=ok)
        return result

    BaseResponse.call_action = call_action
