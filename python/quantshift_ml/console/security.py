"""Login, session and CSRF enforcement for every request, in one place.

Rules: every page but ``/login`` and ``/static`` needs a live session, which the
server decides on each request (``sessions``: logout, a password change and the
idle and absolute timeouts end it); every POST needs the session's CSRF token in
its form. A request that fails either is answered before any handler runs, so it
can change nothing: a GET is sent to the login page, a POST gets 403.

The cookie holds one random value and nothing else. Once logged in it is the
session id; before that it is only a nonce the login form's CSRF token is derived
from (HMAC with the console's secret), so no server record exists for a visitor
who has not logged in, and nobody can fill the state directory without a password.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp

from quantshift_ml.console import auth
from quantshift_ml.console.sessions import Session, SessionStore, new_id, valid_id

COOKIE = "quantshift_console"
PUBLIC = ("/login", "/static/")
HEADERS = {
    # everything is served by the console itself: no CDN, no inline script
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'; "
                               "base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


def session(request: Request) -> Session | None:
    """The request's live session (the guard looked it up), or None."""
    found = getattr(request.state, "session", None)
    return found if isinstance(found, Session) else None


def csrf_token(request: Request) -> str:
    """The session's CSRF token, or before login the one derived from the cookie's nonce."""
    live = session(request)
    return live.csrf if live is not None else str(getattr(request.state, "login_csrf", ""))


def user(request: Request) -> str | None:
    live = session(request)
    return live.user if live is not None else None


def cookie_value(request: Request) -> str:
    return str(getattr(request.state, "cookie", ""))


def set_cookie(response: Response, value: str, max_age: int, secure: bool) -> None:
    """The one cookie: HttpOnly, SameSite=Strict, path /; Secure behind TLS."""
    response.set_cookie(COOKIE, value, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=secure)


def login_token(secret: str, nonce: str) -> str:
    """The login form's CSRF token: bound to this browser's cookie, unforgeable without
    the secret."""
    return hmac.new(secret.encode(), b"login\0" + nonce.encode(), hashlib.sha256).hexdigest()


async def form_with_csrf(request: Request) -> dict[str, Any] | None:
    """The POST's form when its CSRF token is the session's (or the login form's), else None."""
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    if not auth.token_ok(csrf_token(request), data.get("csrf")):
        return None
    return data


class Guard(BaseHTTPMiddleware):
    """Session looked up on the server, login required, CSRF on every POST, security headers."""

    def __init__(self, app: ASGIApp, store: SessionStore, users: Any, secret: str,
                 secure: bool) -> None:
        super().__init__(app)
        self.store, self.users, self.secret, self.secure = store, users, secret, secure

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        given = request.cookies.get(COOKIE, "")
        cookie = given if valid_id(given) else new_id()
        request.state.cookie = cookie
        request.state.session = self.store.lookup(cookie, self.users) if cookie == given else None
        request.state.login_csrf = login_token(self.secret, cookie)
        public = path == "/login" or path.startswith("/static/")
        if not public and request.state.session is None:
            return self._answer(request, _login_required(request, path), given)
        if request.method == "POST":
            form = await form_with_csrf(request)
            if form is None:
                return self._answer(request, PlainTextResponse(
                    "invalid or missing CSRF token: reload the page and try again",
                    status_code=403), given)
            request.state.form = form
        return self._answer(request, await call_next(request), given)

    def _answer(self, request: Request, response: Response, given: str) -> Response:
        """Headers on every answer; a browser without a usable cookie gets its nonce."""
        if cookie_value(request) != given and not any(
                k == b"set-cookie" and v.startswith(COOKIE.encode() + b"=")
                for k, v in response.raw_headers):
            set_cookie(response, cookie_value(request), int(self.store.absolute), self.secure)
        return _headers(response)


def _login_required(request: Request, path: str) -> Response:
    if request.method != "GET":
        return PlainTextResponse("login required (the session ended or never began)",
                                 status_code=403)
    if path.endswith(".json"):
        return JSONResponse({"error": "login required"}, status_code=401)
    return RedirectResponse("/login", status_code=303)


def _headers(response: Response) -> Response:
    for key, value in HEADERS.items():
        response.headers.setdefault(key, value)
    return response
