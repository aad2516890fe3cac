"""Signing in and out of the browser pages, and the page shell every view is drawn in.

`POST /session` exchanges an API key (form field `key`) for a session cookie: HttpOnly (no
script reads it), SameSite=Lax (another site's form or script never sends it), Secure over
HTTPS. Writes made with the cookie must also carry `X-CSRF-Token` (api.middleware checks it),
a token derived from the cookie's secret that Fleet's own pages receive in the shell.
"""

from __future__ import annotations

import html
import time
from typing import Annotated
from urllib.parse import urlsplit
from uuid import UUID

import msgspec
from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.status_codes import HTTP_303_SEE_OTHER

from api.middleware import SESSION_COOKIE, foreign_origin, session_cookie
from api.web.assets import LEAFLET, PLOTLY_JS
from fleet.access.limits import RequestLimits
from fleet.access.models import ROLE_PERMISSIONS, Principal
from fleet.access.service import SessionService, TenantService, csrf_token
from fleet.errors import PermissionDenied, Unauthenticated
from fleet.settings import WebSettings

CSRF_HEADER = "x-csrf-token"


class SignIn(msgspec.Struct):
    key: str


class MapSettings(msgspec.Struct):
    tiles_url: str | None
    attribution: str


class SessionOut(msgspec.Struct):
    """Who the signed-in page acts as, and what it may show: a control a role may not use is
    never drawn (the API refuses it anyway)."""

    tenant: str
    tenant_name: str
    timezone: str
    role: str
    permissions: list[str]
    api_key_id: UUID | None
    crew_id: UUID | None
    # Present for a cookie session: the pages send it as X-CSRF-Token with every write.
    csrf_token: str | None
    map: MapSettings
    assets: dict[str, str]


def security_headers(web: WebSettings) -> dict[str, str]:
    """The pages load nothing from elsewhere but the city's own map tiles, if it set them."""
    tiles = ""
    if web.tiles_url:
        parts = urlsplit(web.tiles_url.replace("{s}", "a"))
        # Subdomain templates ({s}.tile.example.org) allow the provider's whole domain.
        host = parts.netloc.replace("a.", "*.", 1) if "{s}" in web.tiles_url else parts.netloc
        tiles = f" {parts.scheme}://{host}"
    policy = ("default-src 'self'; script-src 'self'; "
              # Leaflet positions and plotly.js styles its charts with inline styles.
              "style-src 'self' 'unsafe-inline'; "
              f"img-src 'self' data: blob:{tiles}; connect-src 'self'; font-src 'self'; "
              "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


async def session_out(principal: Principal, session_secret: str | None, tenant_service: TenantService,
                      web: WebSettings) -> SessionOut:
    tenant = await tenant_service.current(principal)
    return SessionOut(
        tenant=tenant.slug, tenant_name=tenant.name, timezone=tenant.timezone, role=principal.role.value,
        permissions=sorted(p.value for p in ROLE_PERMISSIONS[principal.role]),
        api_key_id=principal.api_key_id, crew_id=principal.crew_id,
        csrf_token=csrf_token(session_secret) if session_secret and principal.session_id else None,
        map=MapSettings(web.tiles_url, web.tiles_attribution),
        assets={"leaflet": LEAFLET, "plotly": PLOTLY_JS})


def _html(body: str, web: WebSettings, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="text/html", headers=security_headers(web))


def _sign_in_page(message: str | None = None) -> str:
    alert = (f'<p class="signin-error" role="alert" data-testid="signin-error">{html.escape(message)}</p>'
             if message else "")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in — Fleet</title>
<link rel="icon" href="/ui/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/fleet.css">
</head>
<body class="signin">
<main id="main" class="signin-box">
<h1><img src="/ui/icon.svg" alt="" width="32" height="32"> Fleet</h1>
<p>Street lights, waste bins and Wi-Fi of the city. Sign in with your API key.</p>
{alert}
<form method="post" action="/session">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus
       spellcheck="false" data-testid="signin-key">
<button type="submit" data-testid="signin-submit">Sign in</button>
</form>
</main>
</body>
</html>
"""


def _shell(session: SessionOut) -> str:
    # The session rides in the page (a data block scripts may read, never run), so the first
    # paint needs no extra round trip. A script element's text is never entity-decoded, so
    # `<`, `>` and `&` are escaped the JSON way (they occur only inside strings): the block
    # cannot be closed early, and a tile URL's `&` or a city named "A & B" reach the page intact.
    data = (msgspec.json.encode(session).decode()
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fleet — {html.escape(session.tenant_name)}</title>
<link rel="icon" href="/ui/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{LEAFLET}/leaflet.css">
<link rel="stylesheet" href="/ui/fleet.css">
<link rel="stylesheet" href="/ui/control.css">
<link rel="stylesheet" href="/ui/device.css">
<link rel="stylesheet" href="/ui/crew.css">
<script id="fleet-session" type="application/json">{data}</script>
<script src="{LEAFLET}/leaflet.js" defer></script>
<script type="module" src="/ui/app.js"></script>
</head>
<body data-role="{html.escape(session.role)}">
<a class="skip-link" href="#main">Skip to content</a>
<header class="topbar">
<a class="brand" href="#/"><img src="/ui/icon.svg" alt="" width="24" height="24"> Fleet <span class="city">{html.escape(session.tenant_name)}</span></a>
<nav aria-label="Views" id="nav"></nav>
<span class="connection" id="connection" role="status" aria-live="polite" data-testid="connection"></span>
<form method="post" action="/session/logout" class="logout">
<input type="hidden" name="csrf_token" value="{html.escape(session.csrf_token or "")}">
<button type="submit" data-testid="logout">Sign out</button>
</form>
</header>
<main id="main" tabindex="-1"></main>
</body>
</html>
"""


def _cookie_header(request: Request, secret: str, max_age: int) -> str:
    return session_cookie(secret, max_age, request.url.scheme == "https")


def same_origin(request: Request) -> bool:
    return not foreign_origin(request.headers.get("origin"), request.url.scheme, request.headers.get("host", ""))


@get("/", include_in_schema=False)
async def home(request: Request, session_service: SessionService, tenant_service: TenantService,
               web_settings: WebSettings) -> Response:
    """The signed-in city's pages, or the sign-in form."""
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        try:
            principal = await session_service.authenticate(secret)
        except Unauthenticated:
            pass
        else:
            page = _html(_shell(await session_out(principal, secret, tenant_service, web_settings)),
                         web_settings)
            # Loading the page is a use: the browser keeps the cookie another idle period.
            page.headers["Set-Cookie"] = _cookie_header(request, secret, int(session_service.idle_s))
            return page
    return _html(_sign_in_page(), web_settings)


@post("/session", include_in_schema=False, status_code=HTTP_303_SEE_OTHER)
async def sign_in(request: Request, data: Annotated[SignIn, Body(media_type=RequestEncodingType.URL_ENCODED)],
                  session_service: SessionService, request_limits: RequestLimits,
                  web_settings: WebSettings) -> Response:
    address = (request.client.host if request.client else "unknown")
    if not same_origin(request):
        return _html(_sign_in_page("Sign in from Fleet's own page."), web_settings, 403)
    now = time.monotonic()
    # The sign-in form spends the address's budget like any /api request (it opens a session,
    # a database write, each time), and a guessing address is stopped before any lookup.
    if request_limits.for_address(address, now):
        return _html(_sign_in_page("Too many requests from this address: wait a moment."), web_settings, 429)
    if request_limits.failing(address, now):
        return _html(_sign_in_page("Too many failed attempts from this address: wait a minute."),
                     web_settings, 429)
    try:
        signed_in = await session_service.sign_in(data.key, request.headers.get("user-agent"))
    except Unauthenticated:
        request_limits.authentication_failed(address, time.monotonic())
        return _html(_sign_in_page("That key is not valid, or it was revoked."), web_settings, 401)
    except PermissionDenied as exc:
        return _html(_sign_in_page(exc.detail), web_settings, 403)
    # Signing in again (another key, or the same) ends the session the browser had: its cookie
    # is replaced, and a copy of the old one kept elsewhere must not live on.
    earlier = request.cookies.get(SESSION_COOKIE)
    if earlier:
        await session_service.sign_out(earlier)
    max_age = int(session_service.idle_s)
    return Response(None, status_code=HTTP_303_SEE_OTHER,
                    headers={"Location": "/", "Set-Cookie": _cookie_header(request, signed_in.secret, max_age),
                             "Cache-Control": "no-store"})


@post("/session/logout", include_in_schema=False, status_code=HTTP_303_SEE_OTHER)
async def sign_out(request: Request, session_service: SessionService) -> Response:
    """Ends the session (on every node) and clears the cookie; without one it only redirects."""
    if not same_origin(request):
        return Response(None, status_code=403)
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        await session_service.sign_out(secret)
    return Response(None, status_code=HTTP_303_SEE_OTHER,
                    headers={"Location": "/", "Set-Cookie": _cookie_header(request, "", 0),
                             "Cache-Control": "no-store"})


@get("/api/v1/session", summary="Who the caller is: city, role, permissions; with a cookie, the CSRF token",
     tags=["access"])
async def current_session(request: Request, principal: Principal, tenant_service: TenantService,
                          web_settings: WebSettings) -> SessionOut:
    return await session_out(principal, request.cookies.get(SESSION_COOKIE), tenant_service, web_settings)


web_routes = [home, sign_in, sign_out, current_session]
