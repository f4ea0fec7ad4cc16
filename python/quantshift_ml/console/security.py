"""Login, session and CSRF enforcement for every request, in one place.

Rules: every page but ``/login`` and ``/static`` needs a logged-in session; every
POST needs the session's CSRF token in its form. A request that fails either is
answered before any handler runs, so it can change nothing.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from quantshift_ml.console import auth

PUBLIC = ("/login", "/static/")
HEADERS = {
    # everything is served by the console itself: no CDN, no inline script
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'; "
                               "base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use (the login form gets one too)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = auth.new_token()
        request.session["csrf"] = token
    return token


def user(request: Request) -> str | None:
    name = request.session.get("user")
    return name if isinstance(name, str) and name else None


async def form_with_csrf(request: Request) -> dict[str, Any] | None:
    """The POST's form when its CSRF token is the session's, else None."""
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    if not auth.token_ok(request.session.get("csrf"), data.get("csrf")):
        return None
    return data


class Guard(BaseHTTPMiddleware):
    """Login required, CSRF on every POST, security headers on every answer."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        public = path == "/login" or path.startswith("/static/")
        if not public and user(request) is None:
            response: Response
            if request.method != "GET":
                response = PlainTextResponse("login required", status_code=403)
            elif path.endswith(".json"):
                response = JSONResponse({"error": "login required"}, status_code=401)
            else:
                response = RedirectResponse("/login", status_code=303)
            return _headers(response)
        if request.method == "POST":
            form = await form_with_csrf(request)
            if form is None:
                return _headers(PlainTextResponse(
                    "invalid or missing CSRF token: reload the page and try again",
                    status_code=403))
            request.state.form = form
        return _headers(await call_next(request))


def _headers(response: Response) -> Response:
    for key, value in HEADERS.items():
        response.headers.setdefault(key, value)
    return response
