"""The chat-domain REST API (users, workspaces, members, channels, DMs) and the OpenAPI
document of the whole REST app.

:func:`register_domain_routes` adds every ``/v1`` domain route
(``domain_users``, ``domain_workspaces``, ``domain_channels``) and ``GET /openapi.yaml``
to the app of :func:`gateway.routes.rest.create_rest_app`. The document ships inside the
package (``gateway/routes/openapi.yaml``), so an installed gateway serves it too.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING

from quart import Response
from quart_trio import QuartTrio

from gateway.routes.domain_channels import register_channel_routes
from gateway.routes.domain_users import register_user_routes
from gateway.routes.domain_workspaces import register_workspace_routes

if TYPE_CHECKING:
    from gateway.actors.node import Node

__all__ = ["openapi_document", "register_domain_routes"]


@functools.cache
def openapi_document() -> bytes:
    """The OpenAPI 3.1 document (YAML) of the REST app, as shipped in the package."""
    return resources.files("gateway.routes").joinpath("openapi.yaml").read_bytes()


def register_domain_routes(app: QuartTrio, node: Node) -> None:
    """Add the domain routes and ``GET /openapi.yaml``. ``node`` is only used while
    handling requests (``node.domain``, ``node.verifier``), never here."""
    register_user_routes(app, node)
    register_workspace_routes(app, node)
    register_channel_routes(app, node)

    @app.get("/openapi.yaml")
    async def openapi_yaml() -> Response:
        return Response(openapi_document(), content_type="application/yaml; charset=utf-8")
