"""The organisers' page, /metrics and /healthz, served from `mailer run`'s own event loop
(SPEC §12).

aiohttp.web: it runs inside a loop that already exists (`AppRunner`/`TCPSite`, no thread,
no second server process), is asyncio through and through like the rest of the service,
and is kept by the aio-libs team. Read-only: GET and HEAD, nothing else. With a login, HTTP
Basic authentication guards every path but /healthz (which says only "ok"). The organisers'
pages are a package of their own, `mailer.web_pages`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from mailer.config_web import WebSettings
from mailer.engine import Engine
from mailer.metrics import CONTENT_TYPE_LATEST, Metrics
from mailer.store import Store
from mailer.web_pages import add_pages

log = logging.getLogger("mailer")

# A store that does not answer one cheap query within this is unreachable (a lock held
# for long, a server gone): /healthz says 503 rather than keep the load balancer waiting.
HEALTH_TIMEOUT_S = 2.0
# After the server failed for a reason other than a taken port: wait, then start it again.
RESTART_S = (1.0, 60.0)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_READ_ONLY = ("GET", "HEAD")
_NO_LOGIN_NEEDED = ("/healthz",)
_STORE = web.AppKey("store", Store)
_METRICS = web.AppKey("metrics", Metrics)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(settings: WebSettings, *, store: Store, metrics: Metrics) -> web.Application:
    """The application: /metrics, /healthz, the login and the headers every response carries
    (the pages are added by `mailer.web_pages.add_pages`)."""
    app = web.Application(middlewares=[_login(settings), _read_only])
    app[_STORE] = store
    app[_METRICS] = metrics
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    return app


def _login(settings: WebSettings) -> Middleware:
    """Basic authentication when `[web]` has a login; both parts compared in constant time."""
    want_user = (settings.username or "").encode()
    want_password = (settings.password.get_secret_value() if settings.password else "").encode()

    @web.middleware
    async def login(request: web.Request, handler: Handler) -> web.StreamResponse:
        if settings.username is None or request.path in _NO_LOGIN_NEEDED:
            return await handler(request)
        user, password = _basic_credentials(request.headers.get("Authorization", ""))
        same_user = hmac.compare_digest(user, want_user)
        if not (hmac.compare_digest(password, want_password) and same_user):
            raise web.HTTPUnauthorized(
                headers={"WWW-Authenticate": 'Basic realm="mailer", charset="UTF-8"'}
            )
        return await handler(request)

    return login


def _basic_credentials(header: str) -> tuple[bytes, bytes]:
    """(user, password) from "Basic base64(user:password)"; empty ones if it is not that."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return b"", b""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b"", b""
    user, _, password = decoded.partition(b":")
    return user, password


@web.middleware
async def _read_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No request changes anything: any method but GET and HEAD is refused."""
    if request.method not in _READ_ONLY:
        raise web.HTTPMethodNotAllowed(request.method, list(_READ_ONLY))
    return await handler(request)


async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


async def _metrics(request: web.Request) -> web.Response:
    body = await request.app[_METRICS].scrape()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    """200 while the loop answers (this runs on it) and the store answers a cheap query in
    time; 503 otherwise."""
    if await store_answers(request.app[_STORE]):
        return web.Response(text="ok\n")
    return web.Response(status=503, text="the database does not answer\n")


async def store_answers(store: Store) -> bool:
    """The database is still the one opened, and answers one indexed query in time."""
    try:
        store.ensure_same_file()
        await asyncio.wait_for(store.next_due(), timeout=HEALTH_TIMEOUT_S)
    except Exception:  # any failure is "not healthy"; the engine logs its own
        return False
    return True


async def serve_page(settings: WebSettings, engine: Engine) -> None:
    """Serve `[web] listen` until cancelled; restarted after a failure (logged once per kind),
    given up only when the address is taken: sending goes on without the page."""
    metrics = Metrics(engine.store, now=engine.now, attempts=engine.sender.attempts_made)
    app = make_app(settings, store=engine.store, metrics=metrics)
    add_pages(app, engine, settings)
    last_failure, pause_s = "", RESTART_S[0]
    while True:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        try:
            await runner.setup()
            await web.TCPSite(runner, settings.host, settings.port).start()
            log.info("web page at http://%s/", settings.listen)
            await asyncio.Event().wait()  # until cancelled
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                log.warning(
                    "web page not served: %s is in use (another mailer on this machine?); "
                    "sending goes on",
                    settings.listen,
                )
                return
            failure = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # the page must not end the service
            failure = f"{type(exc).__name__}: {exc}"
        finally:
            await runner.cleanup()
        if failure != last_failure:
            log.error("web page stopped (%s); starting it again", failure)
            last_failure, pause_s = failure, RESTART_S[0]
        await asyncio.sleep(pause_s)
        pause_s = min(pause_s * 2, RESTART_S[1])
