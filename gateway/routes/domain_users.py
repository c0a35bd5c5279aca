"""REST: user profiles (``/v1/users``).

The token's ``sub`` is the user id. ``PUT /v1/users/me`` without ``expected_version``
creates the caller's profile (201; 409 ``already_exists`` reason ``user`` if it exists),
with ``expected_version`` updates it (200; 409 ``stale_version`` with ``current``). Any
authenticated user may read any profile. A token with ``gateway_admin: true`` may create
and update other users' profiles (provisioning) through ``PUT /v1/users/{user}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType
from quart import Response
from quart_trio import QuartTrio

from gateway.domain import rules
from gateway.domain.model import AvatarUrl, DisplayName, StatusText
from gateway.errors import ErrorCode
from gateway.routes.domain_common import (
    HttpError,
    Version,
    authenticate,
    decode_body,
    endpoint,
    json_response,
    store,
)

if TYPE_CHECKING:
    from gateway.actors.node import Node

__all__ = ["ProfileBody", "register_user_routes"]

EmailInput = Annotated[str, Meta(min_length=1, max_length=254)]
"""Any case and surrounding blanks: the store normalizes and checks it (``invalid_field``)."""


class ProfileBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``PUT /v1/users/me``: without ``expected_version`` a new profile (``email`` and
    ``display_name`` required), with it the fields to change."""

    email: EmailInput | UnsetType = UNSET
    display_name: DisplayName | UnsetType = UNSET
    avatar_url: AvatarUrl | UnsetType | None = UNSET
    status_text: StatusText | UnsetType = UNSET
    expected_version: Version | UnsetType = UNSET


async def _put_profile(node: Node, user_id: str) -> Response:
    body = await decode_body(ProfileBody)
    domain = store(node)
    if isinstance(body.expected_version, UnsetType):
        for name in ("email", "display_name"):
            if getattr(body, name) is UNSET:
                raise HttpError(
                    400,
                    ErrorCode.INVALID_FIELD,
                    f"a new profile needs {name} (to update one, send expected_version)",
                    field=name,
                )
        assert not isinstance(body.email, UnsetType)
        assert not isinstance(body.display_name, UnsetType)
        created = await domain.create_user(
            user_id,
            body.email,
            body.display_name,
            avatar_url=None if isinstance(body.avatar_url, UnsetType) else body.avatar_url,
            status_text="" if isinstance(body.status_text, UnsetType) else body.status_text,
        )
        return json_response(created, 201)
    updated = await domain.update_user(
        user_id,
        expected_version=body.expected_version,
        email=body.email,
        display_name=body.display_name,
        avatar_url=body.avatar_url,
        status_text=body.status_text,
    )
    return json_response(updated)


async def _get_profile(node: Node, user_id: str) -> Response:
    user = await store(node).get_user(user_id)
    if user is None:
        raise HttpError(404, ErrorCode.NOT_FOUND, f"no user {user_id!r}", reason="user")
    return json_response(user)


def register_user_routes(app: QuartTrio, node: Node) -> None:
    @app.get("/v1/users/me")
    @endpoint
    async def domain_get_me() -> Response:
        """The caller's profile (404 ``not_found`` reason ``user`` before the first PUT)."""
        identity = await authenticate(node)
        return await _get_profile(node, identity.user)

    @app.put("/v1/users/me")
    @endpoint
    async def domain_put_me() -> Response:
        identity = await authenticate(node)
        return await _put_profile(node, identity.user)

    @app.get("/v1/users/<path:user>")
    @endpoint
    async def domain_get_user(user: str) -> Response:
        """Any authenticated user may read any profile."""
        await authenticate(node)
        return await _get_profile(node, user)

    @app.put("/v1/users/<path:user>")
    @endpoint
    async def domain_put_user(user: str) -> Response:
        """Provisioning: admin tokens for anyone, other tokens for their own profile."""
        identity = await authenticate(node)
        if not (identity.admin or rules.can_update_user(identity.user, user)):
            raise HttpError(
                403,
                ErrorCode.FORBIDDEN,
                "only the user (or a token with gateway_admin: true) edits a profile",
            )
        return await _put_profile(node, user)
