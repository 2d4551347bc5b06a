"""Control plane of the emulator: fault injection, call counters and transition timings.

Everything here is process-wide state guarded by one lock; the HTTP side lives in
`leasehold_ext.http`, the hook that consults it on every AWS call in `leasehold_ext.hooks`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

LOCK = threading.RLock()

# Default durations (seconds) of the transitional states the extension adds.
DEFAULTS = {
    # a user group / ACL stays `modifying` (or `creating`, `deleting`) this long after a change
    "user_group": 1.0,
    "acl": 1.0,
    # a user stays `creating` / `modifying` / `deleting` this long
    "user": 0.2,
    # a replication group / serverless cache / MemoryDB cluster stays `creating`
    "cluster": 0.0,
}


# `operation` value that matches every operation of the fault's `service`.
ANY_OPERATION = "*"


@dataclass
class Fault:
    """One injected fault: matches calls of `operation` (and `service`/`resource` if set)."""

    id: int
    operation: str
    service: str | None = None
    resource: str | None = None
    remaining: int | None = 1  # None: every matching call until cleared
    error_code: str | None = None
    status: int = 400
    message: str | None = None
    latency_ms: int = 0
    fired: int = 0
    # None: fires on every matching call; else on this share of them, drawn from `rng`.
    probability: float | None = None
    seed: int | None = None
    # Matching calls seen, fired or not.
    matched: int = 0
    rng: random.Random | None = field(default=None, repr=False, compare=False)

    def matches(self, service: str, operation: str, rid: str | None) -> bool:
        if self.operation != ANY_OPERATION and self.operation != operation:
            return False
        if self.service is not None and self.service.lower() != service.lower():
            return False
        return self.resource is None or self.resource == rid

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "operation": self.operation,
            "service": self.service,
            "resource": self.resource,
            "remaining": self.remaining,
            "error_code": self.error_code,
            "status": self.status,
            "message": self.message,
            "latency_ms": self.latency_ms,
            "probability": self.probability,
            "seed": self.seed,
            "matched": self.matched,
            "fired": self.fired,
        }


@dataclass
class ControlState:
    faults: list[Fault] = field(default_factory=list)
    next_fault_id: int = 1
    calls: Counter = field(default_factory=Counter)
    # (kind, id or None) -> seconds
    durations: dict[tuple[str, str | None], float] = field(default_factory=dict)


STATE = ControlState()


def _norm(resource: str | None) -> str | None:
    return resource.lower() if isinstance(resource, str) else None


def duration(kind: str, resource_id: str | None = None) -> float:
    """Seconds that `kind` (`user_group`, `acl`, `user`, `cluster`) stays transitional."""
    with LOCK:
        rid = _norm(resource_id)
        if rid is not None and (kind, rid) in STATE.durations:
            return STATE.durations[(kind, rid)]
        return STATE.durations.get((kind, None), DEFAULTS[kind])


def set_duration(kind: str, resource_id: str | None, seconds: float) -> None:
    if kind not in DEFAULTS:
        raise ValueError(f"unknown kind {kind!r}; one of {sorted(DEFAULTS)}")
    if seconds < 0:
        raise ValueError("seconds must be >= 0")
    with LOCK:
        STATE.durations[(kind, _norm(resource_id))] = float(seconds)


def _probability(spec: dict[str, Any]) -> tuple[float | None, int | None]:
    """The optional `probability` (0 < p <= 1) and `seed` (an integer) of a fault spec."""
    p = spec.get("probability")
    seed = spec.get("seed")
    if p is not None:
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise ValueError(f"probability must be a number with 0 < probability <= 1, not {p!r}")
        p = float(p)
        if not (math.isfinite(p) and 0.0 < p <= 1.0):
            raise ValueError(f"probability must be > 0 and <= 1, not {p!r}")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, not {seed!r}")
        if p is None:
            raise ValueError("seed needs probability: a fault without one fires on every match")
    return p, seed


def add_fault(spec: dict[str, Any]) -> Fault:
    if not isinstance(spec, dict):
        raise ValueError("a fault is a JSON object, e.g. {\"operation\": \"DeleteUser\"}")
    operation = spec.get("operation")
    if not operation or not isinstance(operation, str):
        raise ValueError("operation is required, e.g. \"ModifyUserGroup\" (or \"*\" with a service)")
    if operation == ANY_OPERATION and not spec.get("service"):
        raise ValueError("operation \"*\" needs a service (elasticache, memorydb, iam, sts)")
    probability, seed = _probability(spec)
    count = spec.get("count", 1)
    remaining = None if count is None or int(count) <= 0 else int(count)
    error_code = spec.get("error_code")
    status = int(spec.get("status", 400))
    if spec.get("throttle"):
        # The codes aws-sdk-rust's retry classifier treats as throttling.
        service = (spec.get("service") or "").lower()
        error_code = error_code or ("ThrottlingException" if service == "memorydb" else "Throttling")
        status = int(spec.get("status", 400))
    latency_ms = int(spec.get("latency_ms", 0))
    if error_code is None and latency_ms <= 0:
        raise ValueError("a fault needs error_code, throttle or latency_ms")
    with LOCK:
        fault = Fault(
            id=STATE.next_fault_id,
            operation=operation,
            service=(spec.get("service") or None),
            resource=_norm(spec.get("resource")),
            remaining=remaining,
            error_code=error_code,
            status=status,
            message=spec.get("message"),
            latency_ms=latency_ms,
            probability=probability,
            seed=seed,
            rng=None if probability is None else random.Random(seed),
        )
        STATE.next_fault_id += 1
        STATE.faults.append(fault)
        return fault


def clear_faults(
    operation: str | None = None, resource: str | None = None, service: str | None = None
) -> list[Fault]:
    """Remove the faults of `operation` / `resource` / `service` (each optional); the removed."""
    with LOCK:
        keep: list[Fault] = []
        removed: list[Fault] = []
        for f in STATE.faults:
            hit = (
                (operation is None or f.operation == operation)
                and (resource is None or f.resource == _norm(resource))
                and (service is None or (f.service or "").lower() == service.lower())
            )
            (removed if hit else keep).append(f)
        STATE.faults = keep
        return removed


def record_call(service: str, operation: str, resource: str | None) -> Fault | None:
    """Count a call and return the fault to apply to it, if any (consuming one shot).

    Faults are tried in the order they were added; the first that matches and fires wins. A
    fault with a `probability` that does not fire this time lets the next one try, so several
    of them on one operation split its calls between them.
    """
    rid = _norm(resource)
    with LOCK:
        STATE.calls[(service, operation, None)] += 1
        if rid is not None:
            STATE.calls[(service, operation, rid)] += 1
        for fault in STATE.faults:
            if not fault.matches(service, operation, rid):
                continue
            fault.matched += 1
            if fault.rng is not None and fault.rng.random() >= fault.probability:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
            fault.fired += 1
            if fault.remaining == 0:
                STATE.faults.remove(fault)
            return Fault(**{**fault.__dict__})
        return None


def record_outcome(service: str, operation: str, resource: str | None, accepted: bool) -> None:
    """Count a call's outcome as `<operation>:accepted` or `<operation>:refused` (an AWS error,
    injected or not), so a test can tell the changes a group took from the ones it refused."""
    rid = _norm(resource)
    name = f"{operation}:{'accepted' if accepted else 'refused'}"
    with LOCK:
        STATE.calls[(service, name, None)] += 1
        if rid is not None:
            STATE.calls[(service, name, rid)] += 1


def call_count(operation: str, resource: str | None = None, service: str | None = None) -> int:
    rid = _norm(resource)
    with LOCK:
        return sum(
            n
            for (svc, op, res), n in STATE.calls.items()
            if op == operation and res == rid and (service is None or svc == service)
        )


def all_calls() -> dict[str, int]:
    with LOCK:
        out: dict[str, int] = {}
        for (svc, op, res), n in STATE.calls.items():
            key = f"{svc}:{op}" + (f"/{res}" if res is not None else "")
            out[key] = n
        return out


def reset() -> None:
    with LOCK:
        STATE.faults.clear()
        STATE.calls.clear()
        STATE.durations.clear()


def now() -> float:
    return time.monotonic()
