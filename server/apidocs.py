"""The interactive API documentation at ``/docs``, served from this machine, and the bearer scheme in the spec.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN, so it is blank offline or behind a strict firewall. This
page loads it from the ``swagger-ui-bundle-v2`` package instead (Swagger UI 5, which reads OpenAPI 3.1; served
under ``/docs/static``), and holds no inline script, so that its content-security policy allows only this
origin's scripts. The OpenAPI spec declares the bearer token (:data:`BEARER`): a route that needs the job token
or the admin key says so, and *Authorize* in the page sends it with every *Try it out*.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from lrtune.client.protocol import API_PREFIX
from lrtune.server.deps import job_credential, require_admin

#: Name of the security scheme in the spec.
BEARER = "bearer"
#: URL of the page, and of the Swagger UI assets.
DOCS_URL = "/docs"
ASSETS_URL = f"{DOCS_URL}/static"
#: Operations that take the admin key without needing it: it lifts the per-client job quota.
OPTIONAL_AUTH = frozenset({("post", f"{API_PREFIX}/jobs")})

#: Headers of the page: Swagger UI sets inline styles, and shows its icons as data URLs; nothing else is loosened
#: from the dashboard's policy.
DOCS_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} API</title>
<link rel="stylesheet" href="docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/static/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/static/swagger-ui-bundle.js"></script>
<script src="docs/start.js"></script>
</body>
</html>
"""

# Relative URLs throughout, so that the page also works under a reverse proxy's path prefix.
_START = """window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""


def security_scheme() -> dict[str, Any]:
    """The spec's bearer scheme."""
    return {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "A job's token (returned once by POST /v1/jobs) opens that job's routes; the admin key "
            "(LRTUNE_ADMIN_KEY) opens every route. Without an admin key configured, admin routes are open to "
            "clients on the service's own machine."
        ),
    }


def dependency_calls(route: Any) -> Iterator[Callable[..., Any]]:
    """Every dependency callable of a route, recursively."""
    stack = list(getattr(getattr(route, "dependant", None), "dependencies", []))
    while stack:
        dep = stack.pop()
        yield dep.call
        stack += dep.dependencies


def all_routes(app: FastAPI) -> list[Any]:
    """Every route of the app, with routers included (however this FastAPI version nests them)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are plain routes
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def add_security(schema: dict[str, Any], app: FastAPI) -> None:
    """Declare :data:`BEARER` in ``schema`` and on every operation of ``app`` that takes a token."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER] = security_scheme()
    needed: list[dict[str, list[str]]] = [{BEARER: []}]
    for route in all_routes(app):
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        operations = schema.get("paths", {}).get(path)
        if not operations:
            continue
        guarded = any(call in (job_credential, require_admin) for call in dependency_calls(route))
        for method in getattr(route, "methods", None) or ():
            op = operations.get(method.lower())
            if op is None:
                continue
            if guarded:
                op["security"] = needed
            elif (method.lower(), path) in OPTIONAL_AUTH:
                op["security"] = [{}, *needed]


async def _page(request: Request) -> Response:
    title = getattr(request.app, "title", "lrtune")
    return HTMLResponse(_PAGE.format(title=title), headers=DOCS_HEADERS)


async def _start(request: Request) -> Response:
    return Response(_START, media_type="text/javascript", headers={"X-Content-Type-Options": "nosniff"})


def install(app: FastAPI) -> None:
    """Serve ``/docs`` from local assets and add the bearer scheme to ``app``'s spec.

    ``app`` must be created with ``docs_url=None`` and ``redoc_url=None`` (ReDoc would need a CDN too).
    """
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    app.add_route(DOCS_URL, _page, include_in_schema=False)
    app.add_route(f"{DOCS_URL}/start.js", _start, include_in_schema=False)
    app.mount(ASSETS_URL, StaticFiles(directory=str(swagger_ui_path)), name="docs-static")
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = plain()
        add_security(schema, app)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
