"""Helpers shared by the ElastiCache and MemoryDB parts of the extension."""

from __future__ import annotations

import sys
from typing import Any

from . import control, mirror

MAX_USERS_PER_GROUP = 100


def log(msg: str) -> None:
    print(f"[leasehold-ext] {msg}", file=sys.stderr, flush=True)


def access_rules(access_string: str | None) -> list[str]:
    """An AWS access string is Redis ACL rules separated by spaces."""
    return (access_string or "").split()


def user_rules(access_string: str | None, passwords: list[str] | None, nopass: bool) -> list[str]:
    rules: list[str] = []
    if nopass:
        rules.append("nopass")
    for p in passwords or []:
        rules.append(f">{p}")
    return rules + access_rules(access_string)


class Transition:
    """A status that lasts until a deadline, then becomes `final` (or `gone`)."""

    def __init__(self, status: str, seconds: float, final: str | None):
        self.status = status
        self.until = control.now() + seconds
        self.final = final

    def due(self) -> bool:
        return control.now() >= self.until


def start_mirror(label: str) -> mirror.RedisMirror | None:
    if not mirror.available():
        return None
    try:
        return mirror.RedisMirror(label)
    except RuntimeError as e:
        log(f"no mirror for {label}: {e}")
        return None


def sync_mirror(m: mirror.RedisMirror | None, users: dict[str, list[str]], label: str) -> None:
    if m is None:
        return
    for err in m.sync(users):
        log(f"mirror {label}: {err}")


def lower_list(values: Any) -> list[str]:
    if not values:
        return []
    if isinstance(values, str):
        return [values.lower()]
    return [str(v).lower() for v in values]
