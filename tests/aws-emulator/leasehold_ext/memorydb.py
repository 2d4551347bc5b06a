"""MemoryDB: ACLs, clusters that reference a real ACL, passwords captured for the Redis mirror,
and lasting transitional states."""

from __future__ import annotations

import json
from typing import Any

from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult
from moto.memorydb import models as mdb_models
from moto.memorydb.responses import MemoryDBResponse

from . import control, mirror
from .common import MAX_USERS_PER_GROUP, Transition, log, start_mirror, sync_mirror, user_rules

OPEN_ACCESS = "open-access"


def _error(code: str, message: str) -> JsonRESTError:
    err = JsonRESTError(code, message)
    err.code = 400
    return err


class ACL:
    def __init__(self, backend: Any, name: str, user_names: list[str], creating: bool = True):
        self.name = name
        self.user_names = list(user_names)
        self.pending_add: list[str] = []
        self.pending_remove: list[str] = []
        self.transition: Transition | None = (
            Transition("creating", control.duration("acl", name), "active") if creating else None
        )
        self.arn = f"arn:aws:memorydb:{backend.region_name}:{backend.account_id}:acl/{name}"

    @property
    def status(self) -> str:
        return self.transition.status if self.transition else "active"

    def to_dict(self, backend: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Name": self.name,
            "Status": self.status,
            "UserNames": list(self.user_names),
            "MinimumEngineVersion": "6.2",
            "Clusters": [c.cluster_name for c in backend.clusters.values() if c.acl_name == self.name],
            "ARN": self.arn,
        }
        if self.pending_add or self.pending_remove:
            out["PendingChanges"] = {
                "UserNamesToAdd": list(self.pending_add),
                "UserNamesToRemove": list(self.pending_remove),
            }
        return out


class State:
    def __init__(self, backend: Any):
        self.backend = backend
        self.acls: dict[str, ACL] = {OPEN_ACCESS: ACL(backend, OPEN_ACCESS, ["default"], creating=False)}
        # user name -> passwords (moto keeps only their count)
        self.passwords: dict[str, list[str]] = {}
        self.mirrors: dict[str, mirror.RedisMirror] = {}
        self.user_transitions: dict[str, Transition] = {}


_STATES: list[State] = []


def state(backend: Any) -> State:
    st = getattr(backend, "_leasehold_state", None)
    if st is None:
        st = State(backend)
        backend._leasehold_state = st
        _STATES.append(st)
    return st


def _body(self: MemoryDBResponse) -> dict[str, Any]:
    try:
        return json.loads(self.body or "{}")
    except ValueError:
        return {}


# ---------------------------------------------------------------- mirrors


def _acl_rules(st: State, acl: ACL) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for name in acl.user_names:
        user = st.backend.users.get(name)
        if user is None:
            continue
        auth = (user.authentication or {}).get("Type", "password")
        if auth == "iam":
            continue
        users[name] = user_rules(
            user.access_string, st.passwords.get(name, []), auth == "no-password"
        )
    return users


def _sync_cluster(st: State, cluster_name: str) -> None:
    m = st.mirrors.get(cluster_name)
    cluster = st.backend.clusters.get(cluster_name)
    if m is None or cluster is None:
        return
    acl = st.acls.get(cluster.acl_name or "")
    users = _acl_rules(st, acl) if acl else {}
    sync_mirror(m, users, f"memorydb cluster {cluster_name}")


def _sync_acl(st: State, acl_name: str) -> None:
    for cluster in list(st.backend.clusters.values()):
        if cluster.acl_name == acl_name:
            _sync_cluster(st, cluster.cluster_name)


def _sync_user(st: State, user_name: str) -> None:
    for acl in st.acls.values():
        if user_name in acl.user_names:
            _sync_acl(st, acl.name)


# ---------------------------------------------------------------- transitions


def tick() -> None:
    for st in list(_STATES):
        for name, tr in list(st.user_transitions.items()):
            if not tr.due():
                continue
            del st.user_transitions[name]
            user = st.backend.users.get(name)
            if user is not None:
                user.status = tr.final or "active"
                _sync_user(st, name)
        for name, acl in list(st.acls.items()):
            tr = acl.transition
            if tr is None or not tr.due():
                continue
            acl.transition = None
            if tr.final is None:
                del st.acls[name]
                for uname in acl.user_names:
                    user = st.backend.users.get(uname)
                    if user is not None and name in user.acl_names:
                        user.acl_names.remove(name)
                continue
            if acl.pending_add or acl.pending_remove:
                for uname in acl.pending_remove:
                    if uname in acl.user_names:
                        acl.user_names.remove(uname)
                    user = st.backend.users.get(uname)
                    if user is not None and name in user.acl_names:
                        user.acl_names.remove(name)
                for uname in acl.pending_add:
                    user = st.backend.users.get(uname)
                    if user is None:
                        continue
                    if uname not in acl.user_names:
                        acl.user_names.append(uname)
                    if name not in user.acl_names:
                        user.acl_names.append(name)
                acl.pending_add, acl.pending_remove = [], []
                _sync_acl(st, name)


# ---------------------------------------------------------------- handlers


def _validate_access_string(access_string: str | None) -> None:
    if access_string is None:
        return
    err = mirror.validate_rules(access_string.split())
    if err:
        raise _error("InvalidParameterValueException", f"Access string is invalid: {err}")


def _check_users(st: State, names: list[str]) -> None:
    for n in names:
        if n not in st.backend.users:
            raise _error("UserNotFoundFault", f"User {n} not found.")
    if len(set(names)) > MAX_USERS_PER_GROUP:
        raise _error(
            "InvalidParameterValueException",
            f"An ACL can have at most {MAX_USERS_PER_GROUP} users; {len(set(names))} requested.",
        )


def create_acl(self: MemoryDBResponse) -> ActionResult:
    params = _body(self)
    name = params.get("ACLName") or ""
    names = list(dict.fromkeys(params.get("UserNames") or []))
    st = state(self.memorydb_backend)
    if not name:
        raise _error("InvalidParameterValueException", "ACLName is required.")
    if name in st.acls:
        raise _error("ACLAlreadyExistsFault", f"ACL {name} already exists.")
    _check_users(st, names)
    acl = ACL(self.memorydb_backend, name, names)
    st.acls[name] = acl
    for n in names:
        user = st.backend.users[n]
        if name not in user.acl_names:
            user.acl_names.append(name)
    return ActionResult({"ACL": acl.to_dict(st.backend)})


def update_acl(self: MemoryDBResponse) -> ActionResult:
    params = _body(self)
    name = params.get("ACLName") or ""
    to_add = list(dict.fromkeys(params.get("UserNamesToAdd") or []))
    to_remove = list(dict.fromkeys(params.get("UserNamesToRemove") or []))
    st = state(self.memorydb_backend)
    acl = st.acls.get(name)
    if acl is None:
        raise _error("ACLNotFoundFault", f"ACL {name} not found.")
    if name == OPEN_ACCESS:
        raise _error("InvalidParameterValueException", "The open-access ACL cannot be modified.")
    if acl.status != "active":
        raise _error("InvalidACLStateFault", f"ACL {name} is not in active state.")
    if not to_add and not to_remove:
        raise _error("InvalidParameterCombinationException", "At least one of UserNamesToAdd and UserNamesToRemove is required.")
    if set(to_add) & set(to_remove):
        raise _error("InvalidParameterCombinationException", "A user cannot be both added to and removed from an ACL.")
    after = [u for u in acl.user_names if u not in to_remove]
    after += [u for u in to_add if u not in after]
    _check_users(st, to_add + to_remove)
    _check_users(st, after)
    acl.pending_add = [u for u in to_add if u not in acl.user_names]
    acl.pending_remove = [u for u in to_remove if u in acl.user_names]
    acl.transition = Transition("modifying", control.duration("acl", name), "active")
    return ActionResult({"ACL": acl.to_dict(st.backend)})


def describe_ac_ls(self: MemoryDBResponse) -> ActionResult:
    params = _body(self)
    name = params.get("ACLName")
    st = state(self.memorydb_backend)
    if name:
        acl = st.acls.get(name)
        if acl is None:
            raise _error("ACLNotFoundFault", f"ACL {name} not found.")
        acls = [acl]
    else:
        acls = list(st.acls.values())
    return ActionResult({"ACLs": [a.to_dict(st.backend) for a in acls]})


def delete_acl(self: MemoryDBResponse) -> ActionResult:
    params = _body(self)
    name = params.get("ACLName") or ""
    st = state(self.memorydb_backend)
    acl = st.acls.get(name)
    if acl is None:
        raise _error("ACLNotFoundFault", f"ACL {name} not found.")
    if name == OPEN_ACCESS:
        raise _error("InvalidParameterValueException", "The open-access ACL cannot be deleted.")
    if acl.status != "active":
        raise _error("InvalidACLStateFault", f"ACL {name} is not in active state.")
    if any(c.acl_name == name for c in st.backend.clusters.values()):
        raise _error("InvalidACLStateFault", f"ACL {name} is associated with a cluster and cannot be deleted.")
    acl.transition = Transition("deleting", control.duration("acl", name), None)
    return ActionResult({"ACL": acl.to_dict(st.backend)})


def _passwords_of(params: dict[str, Any]) -> list[str] | None:
    mode = params.get("AuthenticationMode")
    if not isinstance(mode, dict):
        return None
    if mode.get("Type") in ("no-password", "iam"):
        return []
    return list(mode.get("Passwords") or [])


def _check_passwords(passwords: list[str]) -> None:
    if len(passwords) > 2:
        raise _error("InvalidParameterValueException", "A user can have at most 2 passwords.")
    if any(not 16 <= len(p) <= 128 for p in passwords):
        raise _error("InvalidParameterValueException", "Passwords length must be between 16-128 characters.")


def _wrap_users() -> None:
    orig_create = MemoryDBResponse.create_user
    orig_update = MemoryDBResponse.update_user
    orig_delete = MemoryDBResponse.delete_user

    def create_user(self: MemoryDBResponse):
        params = _body(self)
        passwords = _passwords_of(params) or []
        _check_passwords(passwords)
        _validate_access_string(params.get("AccessString"))
        result = orig_create(self)
        st = state(self.memorydb_backend)
        name = params.get("UserName")
        st.passwords[name] = passwords
        user = st.backend.users.get(name)
        if user is not None:
            user.status = "creating"
            st.user_transitions[name] = Transition("creating", control.duration("user", name), "active")
            result = ActionResult({"User": user.to_dict()})
        return result

    def update_user(self: MemoryDBResponse):
        params = _body(self)
        st = state(self.memorydb_backend)
        name = params.get("UserName")
        user = st.backend.users.get(name)
        if user is not None and user.status != "active":
            raise _error("InvalidUserStateFault", f"User {name} is not in active state.")
        passwords = _passwords_of(params)
        if passwords is not None:
            _check_passwords(passwords)
        _validate_access_string(params.get("AccessString"))
        result = orig_update(self)
        if passwords is not None:
            st.passwords[name] = passwords
        user = st.backend.users.get(name)
        if user is not None:
            user.status = "modifying"
            st.user_transitions[name] = Transition("modifying", control.duration("user", name), "active")
            result = ActionResult({"User": user.to_dict()})
        return result

    def delete_user(self: MemoryDBResponse):
        params = _body(self)
        st = state(self.memorydb_backend)
        name = params.get("UserName")
        user = st.backend.users.get(name)
        if user is not None and user.status not in ("active",):
            raise _error("InvalidUserStateFault", f"User {name} is not in active state.")
        result = orig_delete(self)
        # moto forgets the user at once: drop it from every ACL and every mirror now.
        st.passwords.pop(name, None)
        st.user_transitions.pop(name, None)
        for acl in st.acls.values():
            changed = False
            for lst in (acl.user_names, acl.pending_add, acl.pending_remove):
                if name in lst:
                    lst.remove(name)
                    changed = True
            if changed:
                _sync_acl(st, acl.name)
        return result

    MemoryDBResponse.create_user = create_user
    MemoryDBResponse.update_user = update_user
    MemoryDBResponse.delete_user = delete_user


def _point_cluster_at(cluster: Any, port: int) -> None:
    cluster.port = port
    cluster.cluster_endpoint = {"Address": "127.0.0.1", "Port": port}
    for shard in cluster.shards:
        for node in shard.get("Nodes", []):
            node["Endpoint"] = {"Address": "127.0.0.1", "Port": port}


def _wrap_clusters() -> None:
    Backend = mdb_models.MemoryDBBackend
    orig_create = Backend.create_cluster
    orig_update = Backend.update_cluster
    orig_delete = Backend.delete_cluster

    def create_cluster(self, *args, **kwargs):
        st = state(self)
        acl_name = kwargs.get("acl_name")
        if acl_name:
            acl = st.acls.get(acl_name)
            if acl is None:
                raise _error("ACLNotFoundFault", f"ACL {acl_name} not found.")
            if acl.status != "active":
                raise _error("InvalidACLStateFault", f"ACL {acl_name} is not in active state.")
        cluster = orig_create(self, *args, **kwargs)
        # moto forces clusters without TLS onto open-access; keep the ACL that was asked for,
        # so a plaintext mirror can enforce it.
        if acl_name:
            cluster.acl_name = acl_name
        m = start_mirror(f"memorydb cluster {cluster.cluster_name}")
        if m is not None:
            st.mirrors[cluster.cluster_name] = m
            _point_cluster_at(cluster, m.port)
            _sync_cluster(st, cluster.cluster_name)
        return cluster

    def update_cluster(self, cluster_name, *args, **kwargs):
        st = state(self)
        acl_name = kwargs.get("acl_name")
        if acl_name:
            acl = st.acls.get(acl_name)
            if acl is None:
                raise _error("ACLNotFoundFault", f"ACL {acl_name} not found.")
            if acl.status != "active":
                raise _error("InvalidACLStateFault", f"ACL {acl_name} is not in active state.")
        cluster = orig_update(self, cluster_name, *args, **kwargs)
        _sync_cluster(st, cluster_name)
        return cluster

    def delete_cluster(self, cluster_name, final_snapshot_name):
        cluster = orig_delete(self, cluster_name, final_snapshot_name)
        m = state(self).mirrors.pop(cluster_name, None)
        if m is not None:
            m.stop()
        return cluster

    Backend.create_cluster = create_cluster
    Backend.update_cluster = update_cluster
    Backend.delete_cluster = delete_cluster


def mirror_of(kind: str, resource_id: str) -> mirror.RedisMirror | None:
    if kind != "memorydb_cluster":
        return None
    for st in _STATES:
        if resource_id in st.mirrors:
            return st.mirrors[resource_id]
    return None


def install() -> None:
    MemoryDBResponse.create_acl = create_acl
    MemoryDBResponse.update_acl = update_acl
    MemoryDBResponse.describe_ac_ls = describe_ac_ls
    MemoryDBResponse.delete_acl = delete_acl
    _wrap_users()
    _wrap_clusters()
    log("memorydb: ACLs, ACL-bound clusters, password capture installed")
