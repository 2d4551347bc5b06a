"""ElastiCache: user groups, ModifyUser, serverless caches, and replication groups that
reference user groups, with lasting transitional states and a Redis mirror per cache."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from moto.core.responses import ActionResult
from moto.elasticache import models as ec_models
from moto.elasticache.exceptions import ElastiCacheException
from moto.elasticache.responses import ElastiCacheResponse

from . import control, mirror
from .common import (
    MAX_USERS_PER_GROUP,
    Transition,
    log,
    lower_list,
    start_mirror,
    sync_mirror,
    user_rules,
)


def _error(code: str, message: str) -> ElastiCacheException:
    exc = ElastiCacheException(message)
    exc.code = code
    return exc


class UserGroup:
    def __init__(self, backend: Any, group_id: str, engine: str, user_ids: list[str]):
        self.id = group_id
        self.engine = engine
        self.user_ids = list(user_ids)
        self.pending_add: list[str] = []
        self.pending_remove: list[str] = []
        self.transition: Transition | None = Transition(
            "creating", control.duration("user_group", group_id), "active"
        )
        self.replication_groups: list[str] = []
        self.serverless_caches: list[str] = []
        self.arn = (
            f"arn:aws:elasticache:{backend.region_name}:{backend.account_id}:usergroup:{group_id}"
        )

    @property
    def status(self) -> str:
        return self.transition.status if self.transition else "active"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "UserGroupId": self.id,
            "Status": self.status,
            "Engine": self.engine,
            "UserIds": list(self.user_ids),
            "MinimumEngineVersion": "6.0",
            "ReplicationGroups": list(self.replication_groups),
            "ServerlessCaches": list(self.serverless_caches),
            "ARN": self.arn,
        }
        if self.pending_add or self.pending_remove:
            out["PendingChanges"] = {
                "UserIdsToAdd": list(self.pending_add),
                "UserIdsToRemove": list(self.pending_remove),
            }
        return out


class ServerlessCache:
    def __init__(self, backend: Any, name: str, params: dict[str, Any], user_group_id: str | None):
        self.name = name
        self.engine = (params.get("Engine") or "redis").lower()
        self.description = params.get("Description") or ""
        self.major = params.get("MajorEngineVersion") or "7"
        self.user_group_id = user_group_id
        self.create_time = datetime.now(timezone.utc)
        self.transition: Transition | None = Transition(
            "creating", control.duration("cluster", name), "available"
        )
        self.arn = (
            f"arn:aws:elasticache:{backend.region_name}:{backend.account_id}:serverlesscache:{name}"
        )
        self.mirror: mirror.RedisMirror | None = None

    @property
    def status(self) -> str:
        return self.transition.status if self.transition else "available"

    def to_dict(self) -> dict[str, Any]:
        port = self.mirror.port if self.mirror else 6379
        host = "127.0.0.1" if self.mirror else f"{self.name}.serverless.use1.cache.amazonaws.com"
        out: dict[str, Any] = {
            "ServerlessCacheName": self.name,
            "Description": self.description,
            "CreateTime": self.create_time,
            "Status": self.status,
            "Engine": self.engine,
            "MajorEngineVersion": self.major,
            "FullEngineVersion": f"{self.major}.1",
            "Endpoint": {"Address": host, "Port": port},
            "ReaderEndpoint": {"Address": host, "Port": port},
            "ARN": self.arn,
            "SecurityGroupIds": [],
            "SubnetIds": [],
        }
        if self.user_group_id:
            out["UserGroupId"] = self.user_group_id
        return out


class State:
    """Extension state attached to one moto ElastiCache backend (one account + region)."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.user_groups: dict[str, UserGroup] = {}
        self.serverless: dict[str, ServerlessCache] = {}
        # replication group id -> mirror
        self.rg_mirrors: dict[str, mirror.RedisMirror] = {}
        # user id -> Transition (creating / modifying / deleting)
        self.user_transitions: dict[str, Transition] = {}


_STATES: list[State] = []


def state(backend: Any) -> State:
    st = getattr(backend, "_leasehold_state", None)
    if st is None:
        st = State(backend)
        backend._leasehold_state = st
        _STATES.append(st)
    return st


# ---------------------------------------------------------------- mirrors


def _group_rules(st: State, group: UserGroup) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for uid in group.user_ids:
        user = st.backend.users.get(uid)
        if user is None:
            continue
        users[user.name] = user_rules(
            user.access_string, user.passwords, bool(user.no_password_required)
        )
    return users


def _sync_rg(st: State, rg_id: str) -> None:
    m = st.rg_mirrors.get(rg_id)
    rg = st.backend.replication_groups.get(rg_id)
    if m is None or rg is None:
        return
    users: dict[str, list[str]] = {}
    groups = [st.user_groups[g] for g in rg.user_group_ids if g in st.user_groups]
    if not groups:
        # No RBAC: the open default user, as a fresh Redis has it.
        users = {"default": ["on", "nopass", "~*", "&*", "+@all"]}
    for g in groups:
        users.update(_group_rules(st, g))
    sync_mirror(m, users, f"replication group {rg_id}")


def _sync_serverless(st: State, name: str) -> None:
    sc = st.serverless.get(name)
    if sc is None or sc.mirror is None:
        return
    group = st.user_groups.get(sc.user_group_id or "")
    users = (
        _group_rules(st, group)
        if group
        else {"default": ["on", "nopass", "~*", "&*", "+@all"]}
    )
    sync_mirror(sc.mirror, users, f"serverless cache {name}")


def _sync_group(st: State, group: UserGroup) -> None:
    for rg_id in group.replication_groups:
        _sync_rg(st, rg_id)
    for name in group.serverless_caches:
        _sync_serverless(st, name)


def _groups_of_user(st: State, user_id: str) -> list[UserGroup]:
    return [g for g in st.user_groups.values() if user_id in g.user_ids]


# ---------------------------------------------------------------- transitions


def tick() -> None:
    """Finish every transition whose time is up (called before each request and periodically)."""
    for st in list(_STATES):
        for uid, tr in list(st.user_transitions.items()):
            if not tr.due():
                continue
            del st.user_transitions[uid]
            user = st.backend.users.get(uid)
            if user is None:
                continue
            if tr.final is None:  # deleting -> gone
                st.backend.users.pop(uid, None)
                for g in _groups_of_user(st, uid):
                    g.user_ids.remove(uid)
                    _sync_group(st, g)
                for g in st.user_groups.values():
                    if uid in g.pending_add:
                        g.pending_add.remove(uid)
            else:
                user.status = tr.final
                for g in _groups_of_user(st, uid):
                    _sync_group(st, g)
        for gid, g in list(st.user_groups.items()):
            tr = g.transition
            if tr is None or not tr.due():
                continue
            g.transition = None
            if tr.final is None:
                del st.user_groups[gid]
                for uid in g.user_ids:
                    user = st.backend.users.get(uid)
                    if user is not None and gid in user.user_group_ids:
                        user.user_group_ids.remove(gid)
                continue
            if g.pending_add or g.pending_remove:
                for uid in g.pending_remove:
                    if uid in g.user_ids:
                        g.user_ids.remove(uid)
                    user = st.backend.users.get(uid)
                    if user is not None and gid in user.user_group_ids:
                        user.user_group_ids.remove(gid)
                for uid in g.pending_add:
                    user = st.backend.users.get(uid)
                    if user is None:
                        continue
                    if uid not in g.user_ids:
                        g.user_ids.append(uid)
                    if gid not in user.user_group_ids:
                        user.user_group_ids.append(gid)
                g.pending_add, g.pending_remove = [], []
                _sync_group(st, g)
        for name, sc in list(st.serverless.items()):
            tr = sc.transition
            if tr is None or not tr.due():
                continue
            sc.transition = None
            if tr.final is None:
                del st.serverless[name]
                group = st.user_groups.get(sc.user_group_id or "")
                if group and name in group.serverless_caches:
                    group.serverless_caches.remove(name)
                if sc.mirror:
                    sc.mirror.stop()


# ---------------------------------------------------------------- validation


def _check_members(st: State, engine: str, user_ids: list[str]) -> None:
    names: dict[str, str] = {}
    for uid in user_ids:
        user = st.backend.users.get(uid)
        if user is None:
            raise _error("UserNotFound", f"User {uid} not found.")
        if user.name in names and names[user.name] != uid:
            raise _error("DuplicateUserName", f"Duplicate user name {user.name} in user group.")
        names[user.name] = uid
    if len(user_ids) > MAX_USERS_PER_GROUP:
        raise _error(
            "InvalidParameterValue",
            f"A user group can have at most {MAX_USERS_PER_GROUP} users; {len(user_ids)} requested.",
        )
    if engine == "redis" and "default" not in names:
        raise _error("DefaultUserRequired", "User group needs to contain a user with the user name default.")


def _validate_access_string(access_string: str | None) -> None:
    if access_string is None:
        return
    err = mirror.validate_rules(access_string.split())
    if err:
        raise _error("InvalidParameterValue", f"Access string is invalid: {err}")


def _check_passwords(passwords: list[str]) -> None:
    if len(passwords) > 2:
        raise _error("InvalidParameterValue", "A user can have at most 2 passwords.")
    if any(not 16 <= len(p) <= 128 for p in passwords):
        raise _error("InvalidParameterValue", "Passwords length must be between 16-128 characters.")


# ---------------------------------------------------------------- response handlers


def create_user_group(self: ElastiCacheResponse) -> ActionResult:
    params = self._get_params()
    gid = (params.get("UserGroupId") or "").lower()
    engine = (params.get("Engine") or "").lower()
    user_ids = lower_list(params.get("UserIds"))
    st = state(self.elasticache_backend)
    if not gid:
        raise _error("InvalidParameterValue", "UserGroupId is required.")
    if engine not in ("redis", "valkey"):
        raise _error("InvalidParameterValue", f'Unknown parameter for Engine: "{engine}", must be one of: redis, valkey')
    if gid in st.user_groups:
        raise _error("UserGroupAlreadyExists", f"User group {gid} already exists.")
    _check_members(st, engine, user_ids)
    group = UserGroup(self.elasticache_backend, gid, engine, user_ids)
    st.user_groups[gid] = group
    for uid in user_ids:
        user = st.backend.users[uid]
        if gid not in user.user_group_ids:
            user.user_group_ids.append(gid)
    return ActionResult(group.to_dict())


def modify_user_group(self: ElastiCacheResponse) -> ActionResult:
    params = self._get_params()
    gid = (params.get("UserGroupId") or "").lower()
    to_add = lower_list(params.get("UserIdsToAdd"))
    to_remove = lower_list(params.get("UserIdsToRemove"))
    st = state(self.elasticache_backend)
    group = st.user_groups.get(gid)
    if group is None:
        raise _error("UserGroupNotFound", f"User group {gid} not found.")
    if group.status != "active":
        raise _error("InvalidUserGroupState", f"User group {gid} is not in active state.")
    if not to_add and not to_remove:
        raise _error("InvalidParameterCombination", "At least one of UserIdsToAdd and UserIdsToRemove is required.")
    if set(to_add) & set(to_remove):
        raise _error("InvalidParameterCombination", "A user cannot be both added to and removed from a group.")
    for uid in to_add + to_remove:
        if uid not in st.backend.users:
            raise _error("UserNotFound", f"User {uid} not found.")
    after = [u for u in group.user_ids if u not in to_remove]
    after += [u for u in to_add if u not in after]
    _check_members(st, group.engine, after)
    group.pending_add = [u for u in to_add if u not in group.user_ids]
    group.pending_remove = [u for u in to_remove if u in group.user_ids]
    group.transition = Transition("modifying", control.duration("user_group", gid), "active")
    return ActionResult(group.to_dict())


def describe_user_groups(self: ElastiCacheResponse) -> ActionResult:
    params = self._get_params()
    gid = (params.get("UserGroupId") or "").lower()
    st = state(self.elasticache_backend)
    if gid:
        group = st.user_groups.get(gid)
        if group is None:
            raise _error("UserGroupNotFound", f"User group {gid} not found.")
        groups = [group]
    else:
        groups = list(st.user_groups.values())
    return ActionResult({"UserGroups": [g.to_dict() for g in groups]})


def delete_user_group(self: ElastiCacheResponse) -> ActionResult:
    params = self._get_params()
    gid = (params.get("UserGroupId") or "").lower()
    st = state(self.elasticache_backend)
    group = st.user_groups.get(gid)
    if group is None:
        raise _error("UserGroupNotFound", f"User group {gid} not found.")
    if group.status != "active":
        raise _error("InvalidUserGroupState", f"User group {gid} is not in active state.")
    if group.replication_groups or group.serverless_caches:
        raise _error("InvalidUserGroupState", f"User group {gid} is associated with a cache and cannot be deleted.")
    group.transition = Transition("deleting", control.duration("user_group", gid), None)
    return ActionResult(group.to_dict())


def modify_user(self: ElastiCacheResponse) -> ActionResult:
    params = self._get_params()
    uid = (params.get("UserId") or "").lower()
    st = state(self.elasticache_backend)
    user = st.backend.users.get(uid)
    if user is None:
        raise _error("UserNotFound", f"User {uid} not found.")
    if user.status != "active":
        raise _error("InvalidUserState", f"User {uid} is not in active state.")
    access_string = params.get("AccessString")
    append = params.get("AppendAccessString")
    passwords = params.get("Passwords") or []
    no_password = self._get_bool_param("NoPasswordRequired")
    mode = params.get("AuthenticationMode") or {}
    if mode.get("Passwords"):
        if passwords:
            raise _error("InvalidParameterCombination", "Passwords provided via multiple arguments. Use only one argument")
        passwords = mode["Passwords"]
    if access_string is not None and append is not None:
        raise _error("InvalidParameterCombination", "AccessString and AppendAccessString are exclusive.")
    new_access = access_string
    if append is not None:
        new_access = f"{user.access_string} {append}"
    _validate_access_string(new_access)
    _check_passwords(passwords)
    if new_access is not None:
        user.access_string = new_access
    mode_type = mode.get("Type")
    if no_password or mode_type == "no-password-required":
        user.no_password_required = True
        user.passwords = []
        user.authentication_type = "no-password-required"
    elif passwords:
        user.passwords = list(passwords)
        user.no_password_required = False
        user.authentication_type = "password"
    elif mode_type == "iam":
        user.passwords = []
        user.no_password_required = False
        user.authentication_type = "iam"
    user.status = "modifying"
    st.user_transitions[uid] = Transition("modifying", control.duration("user", uid), "active")
    return ActionResult(user)


def create_serverless_cache(self: ElastiCacheResponse) -> ActionResult:
    params = self._get_params()
    name = (params.get("ServerlessCacheName") or "").lower()
    st = state(self.elasticache_backend)
    if not name:
        raise _error("InvalidParameterValue", "ServerlessCacheName is required.")
    if name in st.serverless:
        raise _error("ServerlessCacheAlreadyExistsFault", f"Serverless cache {name} already exists.")
    gid = (params.get("UserGroupId") or "").lower() or None
    if gid is not None:
        group = st.user_groups.get(gid)
        if group is None:
            raise _error("UserGroupNotFound", f"User group {gid} not found.")
        if group.status != "active":
            raise _error("InvalidUserGroupState", f"User group {gid} is not in active state.")
    sc = ServerlessCache(self.elasticache_backend, name, params, gid)
    sc.mirror = start_mirror(f"serverless cache {name}")
    st.serverless[name] = sc
    if gid is not None:
        st.user_groups[gid].serverless_caches.append(name)
    _sync_serverless(st, name)
    return ActionResult({"ServerlessCache": sc.to_dict()})


def describe_serverless_caches(self: ElastiCacheResponse) -> ActionResult:
    params = self._get_params()
    name = (params.get("ServerlessCacheName") or "").lower()
    st = state(self.elasticache_backend)
    if name:
        sc = st.serverless.get(name)
        if sc is None:
            raise _error("ServerlessCacheNotFoundFault", f"Serverless cache {name} not found.")
        caches = [sc]
    else:
        caches = list(st.serverless.values())
    return ActionResult({"ServerlessCaches": [c.to_dict() for c in caches]})


def modify_serverless_cache(self: ElastiCacheResponse) -> ActionResult:
    params = self._get_params()
    name = (params.get("ServerlessCacheName") or "").lower()
    st = state(self.elasticache_backend)
    sc = st.serverless.get(name)
    if sc is None:
        raise _error("ServerlessCacheNotFoundFault", f"Serverless cache {name} not found.")
    if sc.status != "available":
        raise _error("InvalidServerlessCacheStateFault", f"Serverless cache {name} is not available.")
    gid = (params.get("UserGroupId") or "").lower() or None
    remove = self._get_bool_param("RemoveUserGroup")
    if gid is not None:
        group = st.user_groups.get(gid)
        if group is None:
            raise _error("UserGroupNotFound", f"User group {gid} not found.")
        if group.status != "active":
            raise _error("InvalidUserGroupState", f"User group {gid} is not in active state.")
    if remove or gid is not None:
        old = st.user_groups.get(sc.user_group_id or "")
        if old and name in old.serverless_caches:
            old.serverless_caches.remove(name)
        sc.user_group_id = None if remove else gid
        if sc.user_group_id:
            st.user_groups[sc.user_group_id].serverless_caches.append(name)
        if params.get("Description") is not None:
            sc.description = params["Description"]
        _sync_serverless(st, name)
    return ActionResult({"ServerlessCache": sc.to_dict()})


def delete_serverless_cache(self: ElastiCacheResponse) -> ActionResult:
    params = self._get_params()
    name = (params.get("ServerlessCacheName") or "").lower()
    st = state(self.elasticache_backend)
    sc = st.serverless.get(name)
    if sc is None:
        raise _error("ServerlessCacheNotFoundFault", f"Serverless cache {name} not found.")
    if sc.status != "available":
        raise _error("InvalidServerlessCacheStateFault", f"Serverless cache {name} is not available.")
    sc.transition = Transition("deleting", control.duration("cluster", name), None)
    return ActionResult({"ServerlessCache": sc.to_dict()})


# ---------------------------------------------------------------- backend wraps


def _wrap_backend() -> None:
    Backend = ec_models.ElastiCacheBackend
    orig_create_user = Backend.create_user
    orig_create_rg = Backend.create_replication_group
    orig_delete_rg = Backend.delete_replication_group

    def create_user(self, user_id, user_name, engine, passwords, access_string, no_password_required, authentication_type, tags=None):  # noqa: E501
        user_id = (user_id or "").lower()
        _validate_access_string(access_string)
        user = orig_create_user(
            self, user_id=user_id, user_name=user_name, engine=engine, passwords=passwords,
            access_string=access_string, no_password_required=no_password_required,
            authentication_type=authentication_type, tags=tags,
        )
        user.status = "creating"
        state(self).user_transitions[user_id] = Transition(
            "creating", control.duration("user", user_id), "active"
        )
        return user

    def delete_user(self, user_id):
        user_id = (user_id or "").lower()
        st = state(self)
        user = self.users.get(user_id)
        if user is None:
            raise ec_models.UserNotFound(user_id)
        if user_id == "default" and _groups_of_user(st, user_id):
            raise _error("DefaultUserAssociatedToUserGroup", "The default user is associated with a user group.")
        if user.status != "active":
            raise _error("InvalidUserState", f"User {user_id} is not in active state.")
        user.status = "deleting"
        st.user_transitions[user_id] = Transition("deleting", control.duration("user", user_id), None)
        return user

    def describe_users(self, user_id):
        if user_id:
            user_id = user_id.lower()
            if user_id in self.users:
                return [self.users[user_id]]
            raise ec_models.UserNotFound(user_id)
        return list(self.users.values())

    def create_replication_group(self, *args, **kwargs):
        st = state(self)
        ids = lower_list(kwargs.get("user_group_ids"))
        for gid in ids:
            group = st.user_groups.get(gid)
            if group is None:
                raise _error("UserGroupNotFound", f"User group {gid} not found.")
            if group.status != "active":
                raise _error("InvalidUserGroupState", f"User group {gid} is not in active state.")
        kwargs["user_group_ids"] = ids
        rg = orig_create_rg(self, *args, **kwargs)
        for gid in ids:
            st.user_groups[gid].replication_groups.append(rg.replication_group_id)
        m = start_mirror(f"replication group {rg.replication_group_id}")
        if m is not None:
            st.rg_mirrors[rg.replication_group_id] = m
            _point_rg_at(rg, m.port)
            _sync_rg(st, rg.replication_group_id)
        return rg

    def delete_replication_group(self, replication_group_id, retain_primary_cluster):
        rg = orig_delete_rg(self, replication_group_id, retain_primary_cluster)
        st = state(self)
        for gid in rg.user_group_ids:
            g = st.user_groups.get(gid)
            if g and replication_group_id in g.replication_groups:
                g.replication_groups.remove(replication_group_id)
        m = st.rg_mirrors.pop(replication_group_id, None)
        if m is not None:
            m.stop()
        return rg

    Backend.create_user = create_user
    Backend.delete_user = delete_user
    Backend.describe_users = describe_users
    Backend.create_replication_group = create_replication_group
    Backend.delete_replication_group = delete_replication_group


def _point_rg_at(rg: Any, port: int) -> None:
    """Report the mirror as the replication group's endpoints."""
    rg.port = port
    for ng in rg.node_groups:
        ng["port"] = port
        if "primary_endpoint" in ng:
            ng["primary_endpoint"] = {"address": "127.0.0.1", "port": port}
            ng["primary_endpoint_address"] = "127.0.0.1"
            ng["reader_endpoint_address"] = "127.0.0.1"
        for member in ng.get("node_group_members", []):
            if "read_endpoint" in member:
                member["read_endpoint"] = {"address": "127.0.0.1", "port": port}
    if getattr(rg, "configuration_endpoint", None):
        rg.configuration_endpoint = {"address": "127.0.0.1", "port": port}


def _wrap_modify_replication_group() -> None:
    orig = ElastiCacheResponse.modify_replication_group

    def modify_replication_group(self: ElastiCacheResponse):
        params = self._get_params()
        rg_id = params.get("ReplicationGroupId")
        to_add = lower_list(params.get("UserGroupIdsToAdd"))
        to_remove = lower_list(params.get("UserGroupIdsToRemove"))
        st = state(self.elasticache_backend)
        for gid in to_add:
            group = st.user_groups.get(gid)
            if group is None:
                raise _error("UserGroupNotFound", f"User group {gid} not found.")
            if group.status != "active":
                raise _error("InvalidUserGroupState", f"User group {gid} is not in active state.")
        result = orig(self)
        rg = st.backend.replication_groups.get(rg_id)
        if rg is not None and (to_add or to_remove):
            for gid in to_remove:
                if gid in rg.user_group_ids:
                    rg.user_group_ids.remove(gid)
                g = st.user_groups.get(gid)
                if g and rg_id in g.replication_groups:
                    g.replication_groups.remove(rg_id)
            for gid in to_add:
                if gid not in rg.user_group_ids:
                    rg.user_group_ids.append(gid)
                if rg_id not in st.user_groups[gid].replication_groups:
                    st.user_groups[gid].replication_groups.append(rg_id)
            _sync_rg(st, rg_id)
        return result

    ElastiCacheResponse.modify_replication_group = modify_replication_group


def mirror_of(kind: str, resource_id: str) -> mirror.RedisMirror | None:
    rid = resource_id.lower()
    for st in _STATES:
        if kind == "replication_group":
            for rg_id, m in st.rg_mirrors.items():
                if rg_id.lower() == rid:
                    return m
        if kind == "serverless_cache" and rid in st.serverless:
            return st.serverless[rid].mirror
    return None


def install() -> None:
    ElastiCacheResponse.create_user_group = create_user_group
    ElastiCacheResponse.modify_user_group = modify_user_group
    ElastiCacheResponse.describe_user_groups = describe_user_groups
    ElastiCacheResponse.delete_user_group = delete_user_group
    ElastiCacheResponse.modify_user = modify_user
    ElastiCacheResponse.create_serverless_cache = create_serverless_cache
    ElastiCacheResponse.describe_serverless_caches = describe_serverless_caches
    ElastiCacheResponse.modify_serverless_cache = modify_serverless_cache
    ElastiCacheResponse.delete_serverless_cache = delete_serverless_cache
    _wrap_backend()
    _wrap_modify_replication_group()
    log("elasticache: user groups, ModifyUser, serverless caches installed")
