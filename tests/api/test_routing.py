"""The routing table: no route shadows another, and the viewer's routes are tried first.

Routers are tried in the order the app includes them, and within a router its routes in turn, for
every request. The viewer's routers come first (api/app.py), so that a tile does not first try
every API route; that order is safe only while no route's paths are taken by one before it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute, Match, Route

from allmicro_data.api.app import create_app
from allmicro_data.settings import Settings

# Sample values for a route's path parameters, by convertor (and its name in a path template):
# none of them is a word that a route spells out (such as "c" or "info.json"), so a path made of
# them names only its route.
UUID = "0b5f0b6e-3c1a-4d8e-9a5e-1d2c3b4a5f60"
SAMPLES = {
    "StringConvertor": ("str", UUID),
    "PathConvertor": ("path", "0/0.0/1"),
    "IntegerConvertor": ("int", "7"),
    "FloatConvertor": ("float", "1.5"),
    "UUIDConvertor": ("uuid", UUID),
}


def _routes(app: Any) -> list[BaseRoute]:
    """Every route in the order requests try them (included routers flattened)."""
    out: list[BaseRoute] = []
    for route in app.routes:
        router = getattr(route, "original_router", None)
        out.extend(router.routes if router is not None else [route])
    return out


def _sample_path(route: Route) -> str:
    path = route.path
    for name, convertor in route.param_convertors.items():
        spelled, value = SAMPLES[type(convertor).__name__]
        path = path.replace(f"{{{name}:{spelled}}}", value).replace(f"{{{name}}}", value)
    return path


def _first_match(routes: list[BaseRoute], path: str, method: str) -> BaseRoute | None:
    scope = {"type": "http", "path": path, "method": method, "root_path": ""}
    for route in routes:
        if isinstance(route, Route) and route.matches(scope)[0] == Match.FULL:
            return route
    return None


def test_every_route_answers_its_own_paths(tmp_path: Path) -> None:
    routes = _routes(create_app(Settings(data_dir=tmp_path)))
    checked = 0
    for route in routes:
        if not isinstance(route, Route):
            continue
        path = _sample_path(route)
        for method in sorted(route.methods or {"GET"}):
            found = _first_match(routes, path, method)
            assert found is route, f"{method} {path} ({route.path}) goes to {found and found.path}"
            checked += 1
    assert checked > 150


def test_a_tile_request_tries_the_viewer_routes_first(tmp_path: Path) -> None:
    routes = [r for r in _routes(create_app(Settings(data_dir=tmp_path))) if isinstance(r, Route)]
    tile = f"/iiif/3/{UUID}/0,0,256,256/256,/0/default.jpg"
    found = _first_match(routes, tile, "GET")
    assert found is not None and found.path.startswith("/iiif/3/")
    tried = routes.index(found) + 1
    # The IIIF router's own routes only (it names fewer than 25), not the API's 150 before it.
    assert tried < 25, f"a tile tries {tried} routes"


def test_the_documentation_keeps_its_order_of_sections(tmp_path: Path) -> None:
    """The API documentation lists its sections by API_TAGS, not by the order routes are tried
    in (which puts the viewer's first): every tag an operation has is listed there, once."""
    document = create_app(Settings(data_dir=tmp_path)).openapi()
    listed = [tag["name"] for tag in document.get("tags", [])]
    used = {
        tag
        for operations in document["paths"].values()
        for operation in operations.values()
        for tag in operation.get("tags", [])
    }
    assert len(listed) == len(set(listed))
    assert set(listed) == used
    assert listed[:4] == ["health", "auth", "admin", "catalogue"]
