"""leasehold's extension to moto: what the providers need and moto lacks.

`install()` patches moto in this process (before the server starts): ElastiCache user groups,
ModifyUser and serverless caches; MemoryDB ACLs; lasting `creating`/`modifying`/`deleting`
states; a Redis mirror per cluster; and the hook behind the control endpoint (faults, call
counters). See ../README.md.
"""

from __future__ import annotations

_INSTALLED = False


def install() -> None:
    global _INSTALLED
    if _INSTALLED:
        return
    from . import elasticache, hooks, memorydb

    elasticache.install()
    memorydb.install()
    hooks.install()
    _INSTALLED = True
