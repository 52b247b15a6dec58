"""Real local servers for tests: an SMTP server (aiosmtpd) and a Slack-style webhook.

Both bind 127.0.0.1 on a free port (port 0, so parallel runs never collide), serve from
background threads, and are context managers that stop every thread they started on exit
(the conftest fails a test that leaks threads)::

    with smtp_server() as smtp:
        config = EmailConfig(enabled=True, smtp_server=smtp.host, smtp_port=smtp.port,
                             use_tls=False, recipients=["ops@example.com"])
        ...
        assert smtp.wait_for_messages(1, timeout=5)
        smtp.messages[0].message["Subject"]

    with slack_server(responses=[SlackResponse(429, {"Retry-After": "1"}), 500, 200]) as slack:
        config = SlackConfig(enabled=True, webhook_url=slack.url)
        ...
        assert slack.wait_for_requests(3, timeout=5)
        slack.bodies  # the POSTed JSON payloads, in arrival order

For "server down" tests, :func:`unused_port` gives a loopback port nobody listens on.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: A held Slack request is answered after this long even if the test never releases it.
MAX_HOLD_SECONDS = 30.0


def unused_port() -> int:
    """A loopback TCP port with no listener (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return cast(int, sock.getsockname()[1])


# -- SMTP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedEmail:
    """One message accepted by :class:`SmtpServer`."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    #: User name the session authenticated as, if it did.
    login: str | None


class SmtpServer:
    """State of a running :func:`smtp_server`; read it from the test thread.

    Attributes:
        host: Address to connect to (always 127.0.0.1).
        port: The free port it listens on.
        messages: Accepted messages, in arrival order.
        auth_attempts: ``(user, succeeded)`` for every AUTH attempt (passwords not kept).
        refuse_with: When set to an SMTP reply such as ``"554 5.7.1 Rejected"`` (permanent)
            or ``"451 4.3.0 Try again later"`` (transient), every DATA is answered with it
            and the message is not kept. May be changed while the server runs.
    """

    def __init__(self, *, refuse_with: str | None, credentials: dict[str, str] | None) -> None:
        self.host = LOOPBACK
        self.port = 0
        self.messages: list[ReceivedEmail] = []
        self.auth_attempts: list[tuple[str, bool]] = []
        self.refuse_with = refuse_with
        self._credentials = credentials
        self._cond = threading.Condition()

    def wait_for_messages(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` messages arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.messages) >= count, timeout)

    # aiosmtpd handler hooks (run on the server's event-loop thread)

    async def handle_DATA(
        self, server: SMTPProtocol, session: Session, envelope: Envelope
    ) -> str:
        refusal = self.refuse_with
        if refusal:
            return refusal
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode("utf-8")
        message = BytesParser(policy=default_policy).parsebytes(raw)
        login = session.auth_data.login.decode() if isinstance(
            session.auth_data, LoginPassword) else None
        received = ReceivedEmail(str(envelope.mail_from), list(envelope.rcpt_tos), message,
                                 login)
        with self._cond:
            self.messages.append(received)
            self._cond.notify_all()
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: SMTPProtocol, session: Session, envelope: Envelope, mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        """aiosmtpd authenticator: accept the configured user/password pairs."""
        assert self._credentials is not None
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        ok = self._credentials.get(user) == password
        with self._cond:
            self.auth_attempts.append((user, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class _LoopbackController(Controller):
    """aiosmtpd controller on a socket we bind ourselves, so port 0 (a free port) works.

    The stock controller connects to its configured port to finish starting, which fails
    for port 0; binding first gives the real port before the server starts.
    """

    def __init__(self, handler: SmtpServer, **smtp_kwargs: Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind((LOOPBACK, 0))
        super().__init__(handler, hostname=LOOPBACK, port=self._socket.getsockname()[1],
                         server_hostname="localhost", **smtp_kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._socket,
                                       ssl=self.ssl_context)

    def close_socket(self) -> None:
        self._socket.close()


@contextmanager
def smtp_server(
    *, refuse_with: str | None = None, credentials: dict[str, str] | None = None
) -> Iterator[SmtpServer]:
    """Run an aiosmtpd SMTP server on 127.0.0.1 and a free port for the ``with`` block.

    Args:
        refuse_with: Initial value of :attr:`SmtpServer.refuse_with`.
        credentials: ``{user: password}``; when given, AUTH LOGIN/PLAIN is offered without
            TLS (tests only) and checked against these pairs. Unauthenticated mail is still
            accepted; :attr:`ReceivedEmail.login` tells them apart.

    The server offers no STARTTLS, so a client that insists on TLS fails against it.
    """
    state = SmtpServer(refuse_with=refuse_with, credentials=credentials)
    smtp_kwargs: dict[str, Any] = {}
    if credentials is not None:
        smtp_kwargs.update(authenticator=state.authenticate, auth_require_tls=False)
    controller = _LoopbackController(state, **smtp_kwargs)
    try:
        controller.start()
    except BaseException:
        controller.stop(no_assert=True)
        controller.close_socket()
        raise
    state.port = controller.port
    try:
        yield state
    finally:
        controller.stop()
        controller.close_socket()


# -- Slack webhook --------------------------------------------------------------------------


@dataclass(frozen=True)
class SlackResponse:
    """One scripted answer of :func:`slack_server`."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "ok"


@dataclass(frozen=True)
class RecordedRequest:
    """One POST received by :func:`slack_server`."""

    path: str
    headers: dict[str, str]
    raw: bytes
    #: The parsed JSON body, or None when it was not valid JSON.
    body: Any
    #: Status code it was answered with.
    status: int


class SlackServer:
    """State of a running :func:`slack_server`.

    Attributes:
        url: The webhook URL to configure; its path holds :attr:`secret` like a real one.
        secret: The secret part of the URL (tests assert it never reaches a log).
        requests: Every POST, in arrival order (recorded before the answer is sent).
    """

    def __init__(self, responses: Iterable[int | SlackResponse], *, hold: bool) -> None:
        script = [r if isinstance(r, SlackResponse) else SlackResponse(r) for r in responses]
        if not script:
            raise ValueError("slack_server needs at least one response")
        self.secret = "whsec" + secrets.token_hex(12)
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self._script = script
        self._released = threading.Event()
        if not hold:
            self._released.set()
        self._cond = threading.Condition()

    @property
    def bodies(self) -> list[Any]:
        """The parsed JSON bodies of all requests, in arrival order."""
        with self._cond:
            return [request.body for request in self.requests]

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` requests arrived (answered or held); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= count, timeout)

    def release(self) -> None:
        """Answer held requests now, and every later request at once."""
        self._released.set()

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> SlackResponse:
        """Record a request and pick its scripted answer (the last one repeats)."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._cond:
            response = self._script[min(len(self.requests), len(self._script) - 1)]
            self.requests.append(RecordedRequest(path, headers, raw, body, response.status))
            self._cond.notify_all()
        self._released.wait(MAX_HOLD_SECONDS)
        return response


class _WebhookHandler(BaseHTTPRequestHandler):
    server: _WebhookHTTPServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        response = self.server.state.handle(self.path, dict(self.headers.items()), raw)
        payload = response.body.encode("utf-8")
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        logger.debug("slack_server: answered HTTP %d", response.status)

    def log_message(self, format: str, *args: Any) -> None:
        # Silent on purpose: the request line holds the webhook secret, and tests assert
        # that the secret never reaches any log line.
        return


class _WebhookHTTPServer(ThreadingHTTPServer):
    # Handler threads are joined by server_close(), so none outlives the ``with`` block.
    daemon_threads = False
    block_on_close = True

    def __init__(self, state: SlackServer) -> None:
        super().__init__((LOOPBACK, 0), _WebhookHandler)
        self.state = state

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) while its request was held: not a test failure.
        logger.debug("slack_server: error answering %s", client_address, exc_info=True)


@contextmanager
def slack_server(
    responses: Iterable[int | SlackResponse] = (200,), *, hold: bool = False
) -> Iterator[SlackServer]:
    """Run a Slack-like incoming webhook on 127.0.0.1 and a free port for the ``with`` block.

    Args:
        responses: Answers in order, as status codes or :class:`SlackResponse` (for headers
            such as ``Retry-After``); after the last one, the last repeats. ``[500]`` fails
            every attempt; ``[SlackResponse(429, {"Retry-After": "1"}), 200]`` throttles once.
        hold: When true, each request is recorded and then waits for
            :meth:`SlackServer.release` before it is answered, so a test can prove the
            client went on without waiting. Leaving the block releases it.
    """
    state = SlackServer(responses, hold=hold)
    httpd = _WebhookHTTPServer(state)
    port = httpd.server_address[1]
    state.url = f"http://{LOOPBACK}:{port}/services/T0TEST/B0TEST/{state.secret}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"slack-server-{port}")
    thread.start()
    try:
        yield state
    finally:
        state.release()
        httpd.shutdown()
        thread.join()
        httpd.server_close()
