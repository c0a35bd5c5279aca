"""REST: workspaces and their members (``/v1/workspaces``).

Everything under ``/v1/workspaces/{workspace}`` is for members only: an unknown
workspace and one the caller is not a member of both answer 404 ``not_found`` (reason
``workspace``), so a non-member cannot tell which exist.

``PUT .../members/{user}`` with ``{role}`` adds the user (201) or, for a member with
another role, changes the role (200); the same role again is a no-op (200). Permission is
checked first either way (``rules.check_add_member``/``check_set_role``: 403).
``DELETE .../members/{user}`` removes the membership (204), or answers 404 ``not_found``
reason ``member`` if there was none (after the permission check: a manager's or a
leaver's repeated DELETE is a harmless 404).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from quart import Response
from quart_trio import QuartTrio

from gateway.domain.model import Role, WorkspaceId, WorkspaceName
from gateway.errors import ErrorCode
from gateway.routes.domain_common import (
    HttpError,
    authenticate,
    decode_body,
    endpoint,
    json_response,
    no_content,
    no_workspace,
    page_args,
    require_role,
    store,
)

if TYPE_CHECKING:
    from gateway.actors.node import Node

__all__ = ["MemberBody", "NewWorkspace", "register_workspace_routes"]


class NewWorkspace(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: WorkspaceName
    id: WorkspaceId | None = None  # default: a generated ``w<16 hex>``


class MemberBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    role: Role


def register_workspace_routes(app: QuartTrio, node: Node) -> None:
    @app.post("/v1/workspaces")
    @endpoint
    async def domain_create_workspace() -> Response:
        """The caller becomes the owner. Needs the caller's profile (404 reason ``user``)."""
        identity = await authenticate(node)
        body = await decode_body(NewWorkspace)
        workspace = await store(node).create_workspace(
            body.name, owner=identity.user, workspace_id=body.id
        )
        return json_response(workspace, 201)

    @app.get("/v1/workspaces")
    @endpoint
    async def domain_list_my_workspaces() -> Response:
        """The caller's memberships (``Member`` records), by workspace id."""
        identity = await authenticate(node)
        limit, cursor = page_args()
        page = await store(node).list_user_workspaces(identity.user, limit=limit, cursor=cursor)
        return json_response(page)

    @app.get("/v1/workspaces/<workspace>")
    @endpoint
    async def domain_get_workspace(workspace: str) -> Response:
        identity = await authenticate(node)
        domain = store(node)
        await require_role(domain, workspace, identity.user)
        record = await domain.get_workspace(workspace)
        if record is None:
            raise no_workspace(workspace)
        return json_response(record)

    @app.get("/v1/workspaces/<workspace>/members")
    @endpoint
    async def domain_list_members(workspace: str) -> Response:
        identity = await authenticate(node)
        limit, cursor = page_args()
        domain = store(node)
        await require_role(domain, workspace, identity.user)
        page = await domain.list_members(workspace, limit=limit, cursor=cursor)
        return json_response(page)

    @app.put("/v1/workspaces/<workspace>/members/<path:user>")
    @endpoint
    async def domain_put_member(workspace: str, user: str) -> Response:
        identity = await authenticate(node)
        body = await decode_body(MemberBody)
        domain = store(node)
        await require_role(domain, workspace, identity.user)
        if await domain.add_member(workspace, user, body.role, actor=identity.user):
            member = await domain.get_member(workspace, user)
            if member is None:  # removed again in between
                raise HttpError(409, ErrorCode.CONFLICT, "removed concurrently; retry")
            return json_response(member, 201)
        # Already a member: nothing was written; set_role is a no-op for the same role.
        member = await domain.set_role(workspace, user, body.role, actor=identity.user)
        return json_response(member)

    @app.delete("/v1/workspaces/<workspace>/members/<path:user>")
    @endpoint
    async def domain_remove_member(workspace: str, user: str) -> Response:
        identity = await authenticate(node)
        domain = store(node)
        await require_role(domain, workspace, identity.user)
        if await domain.remove_member(workspace, user, actor=identity.user):
            return no_content()
        raise HttpError(
            404, ErrorCode.NOT_FOUND, f"{user!r} is not a member of {workspace!r}", reason="member"
        )
