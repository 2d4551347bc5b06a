"""Data-plane mirror: one private `redis-server` per emulated cluster.

Each replication group, serverless cache and MemoryDB cluster gets its own Redis on a free
loopback port, reported as the cluster's endpoint. When the users attached to it change, the
extension replays them with `ACL SETUSER <name> reset on >password ... <access string>` and
`ACL DELUSER`, so a credential issued through the AWS API really authenticates (and stops
authenticating after revoke), and access strings go through Redis' own ACL parser.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from typing import Iterable

# The user the emulator itself logs in as; never touched by a sync.
ADMIN_USER = "leasehold-mirror"

_REDIS_SERVER = os.environ.get("LEASEHOLD_REDIS_SERVER") or shutil.which("redis-server")
_ALL: list["RedisMirror"] = []
_ALL_LOCK = threading.Lock()


class RedisError(Exception):
    """An error reply from Redis (`-ERR ...`)."""


def available() -> bool:
    return _REDIS_SERVER is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _encode(args: Iterable[str]) -> bytes:
    parts = [str(a).encode() for a in args]
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


class _Conn:
    """A minimal RESP2 client: enough for AUTH, PING and ACL commands."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rb")
        if user is not None:
            self.call("AUTH", user, password or "")

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass

    def call(self, *args: str):
        self.sock.sendall(_encode(args))
        return self._read()

    def _read(self):
        line = self.file.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ConnectionError(f"unexpected reply {line!r}")


class RedisMirror:
    """A private redis-server standing for one emulated cluster."""

    def __init__(self, label: str):
        if _REDIS_SERVER is None:
            raise RuntimeError("redis-server not found")
        self.label = label
        self.admin_password = secrets.token_hex(16)
        self.dir = tempfile.mkdtemp(prefix="leasehold-mirror-")
        self.applied: set[str] = set()
        self.proc: subprocess.Popen | None = None
        self.port = 0
        last = ""
        for _ in range(5):
            port = _free_port()
            proc = subprocess.Popen(
                [
                    _REDIS_SERVER,
                    "--port", str(port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log"),
                    "--user", ADMIN_USER, "on", f">{self.admin_password}", "~*", "&*", "+@all",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait(proc, port):
                self.proc, self.port = proc, port
                break
            proc.kill()
            proc.wait()
            last = f"port {port}"
        if self.proc is None:
            raise RuntimeError(f"redis-server for {label} did not start ({last})")
        with _ALL_LOCK:
            _ALL.append(self)

    def _wait(self, proc: subprocess.Popen, port: int) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                c = _Conn(port, ADMIN_USER, self.admin_password)
                c.call("PING")
                c.close()
                return True
            except (OSError, ConnectionError, RedisError):
                time.sleep(0.02)
        return False

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def admin(self) -> _Conn:
        return _Conn(self.port, ADMIN_USER, self.admin_password)

    def sync(self, users: dict[str, list[str]]) -> list[str]:
        """Make the server's users exactly `users` (name -> ACL SETUSER rules after `reset`),
        plus the admin user. Returns the errors Redis reported, if any."""
        errors: list[str] = []
        if self.proc is None or self.proc.poll() is not None:
            return ["mirror is not running"]
        conn = self.admin()
        try:
            present = set(conn.call("ACL", "USERS") or [])
            for name, rules in users.items():
                try:
                    conn.call("ACL", "SETUSER", name, "reset", *rules)
                except RedisError as e:
                    errors.append(f"{name}: {e}")
                    # A user whose rules Redis refuses must not keep working with old ones.
                    conn.call("ACL", "SETUSER", name, "reset", "off")
            for name in present - set(users) - {ADMIN_USER}:
                if name == "default":
                    # Redis cannot delete `default`; a group without it leaves it disabled.
                    conn.call("ACL", "SETUSER", "default", "reset", "off")
                else:
                    conn.call("ACL", "DELUSER", name)
            self.applied = set(users)
        finally:
            conn.close()
        return errors

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        with _ALL_LOCK:
            if self in _ALL:
                _ALL.remove(self)


_VALIDATOR: RedisMirror | None = None
_VALIDATOR_LOCK = threading.Lock()


def validate_rules(rules: list[str]) -> str | None:
    """Run `rules` through Redis' ACL parser; the error text, or None when valid (or when no
    redis-server is available to ask)."""
    global _VALIDATOR
    if _REDIS_SERVER is None:
        return None
    with _VALIDATOR_LOCK:
        if _VALIDATOR is None or _VALIDATOR.proc is None or _VALIDATOR.proc.poll() is not None:
            _VALIDATOR = RedisMirror("access-string validator")
        conn = _VALIDATOR.admin()
        try:
            conn.call("ACL", "SETUSER", "leasehold-validate", "reset", *rules)
            conn.call("ACL", "DELUSER", "leasehold-validate")
            return None
        except RedisError as e:
            return str(e)
        finally:
            conn.close()


def stop_all() -> None:
    with _ALL_LOCK:
        mirrors = list(_ALL)
    for m in mirrors:
        m.stop()


atexit.register(stop_all)
