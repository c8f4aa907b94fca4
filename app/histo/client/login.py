"""`histo login`: OIDC sign-in from a terminal (RFC 8252, native apps). A one-shot listener on
127.0.0.1 (any free port: OpenBao matches loopback redirect URIs without the port) receives the
provider's redirect; the state is checked here, then code, PKCE verifier and nonce go to the master,
which redeems them and answers a histo token. The person types the password into OpenBao's page
in the browser, never into this program."""
from __future__ import annotations

import http.server
import threading
import time
import urllib.parse
import webbrowser
from typing import Any, Callable

from .http import Api
from .pkce import Attempt, CallbackError
from .session import Session

CALLBACK_PATH = "/callback"
PAGE = ("<!doctype html><meta charset=utf-8><title>histo</title><p>{}</p>"
        "<p>You may close this tab and return to the terminal.</p>")


class _Callback(http.server.BaseHTTPRequestHandler):
    server: "_Listener"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        parsed = urllib.parse.urlsplit(self.path)
        if parsed.path != CALLBACK_PATH:
            self.send_error(404)
            return
        params = dict(urllib.parse.parse_qsl(parsed.query))
        self.server.params = params
        ok = "code" in params
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(PAGE.format("Signed in to histo." if ok else "Sign-in did not complete.").encode())
        self.server.done.set()

    def log_message(self, format: str, *args: Any) -> None:  # the code is in the query: never logged
        pass


class _Listener(http.server.HTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Callback)
        self.params: dict[str, str] = {}
        self.done = threading.Event()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{CALLBACK_PATH}"


def login(api: Api, ca: str, say: Callable[[str], None], open_browser: bool = True,
          timeout: float = 300.0) -> Session:
    config = api.json("GET", "/api/v1/signin")
    listener = _Listener()
    thread = threading.Thread(target=listener.serve_forever, name="histo-login", daemon=True)
    thread.start()
    try:
        attempt = Attempt(listener.redirect_uri)
        url = attempt.authorize_url(config)
        say(f"sign in at OpenBao's page (opened in your browser if one is available):\n  {url}")
        if open_browser:
            webbrowser.open(url)
        if not listener.done.wait(timeout):
            raise CallbackError(f"no sign-in within {int(timeout)} s")
        code = attempt.code_from(listener.params)
    finally:
        listener.shutdown()
        listener.server_close()
    answer = api.form("/api/v1/oauth/token", attempt.token_form(code))
    return from_answer(api.url, ca, answer)


def client_credentials(api: Api, ca: str, client_id: str, client_secret: str, scope: str) -> Session:
    answer = api.form("/api/v1/oauth/token", {"grant_type": "client_credentials", "client_id": client_id,
                                              "client_secret": client_secret, "scope": scope})
    return from_answer(api.url, ca, answer)


def from_answer(url: str, ca: str, answer: dict[str, Any]) -> Session:
    return Session(url=url, ca=ca, access_token=str(answer["access_token"]),
                   expires_at=time.time() + float(answer.get("expires_in", 0)) - 5,
                   sub=str(answer.get("sub")), role=str(answer.get("role")))
