"""The two drivers of the sans-IO flows: blocking and asyncio.

A driver runs a flow to completion: it makes each :class:`Call` with
httpx, sleeps each :class:`Sleep`, and throws a connection failure into
the flow as :class:`ServerUnreachable`. Nothing else happens here; what a
reply *means* is decided in the flows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from . import __version__
from .errors import ServerUnreachable, redact
from .protocol import Call, Flow, Reply, Sleep, T

DEFAULT_TIMEOUT_SECS = 10.0


def user_agent(app: str) -> str:
    return f"seatwarden-client/{__version__} ({app})"


def _request_args(call: Call) -> dict[str, Any]:
    headers = {"accept": "application/json"}
    if call.bearer is not None:
        headers["authorization"] = f"Bearer {call.bearer}"
    args: dict[str, Any] = {"headers": headers}
    if call.json is not None:
        args["json"] = dict(call.json)
    return args


def _reply(response: httpx.Response) -> Reply:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    headers = {k.lower(): v for k, v in response.headers.items()}
    return Reply(status=response.status_code, body=body, headers=headers)


def _unreachable(error: httpx.TransportError, call: Call) -> ServerUnreachable:
    # httpx's messages name the host and the OS error, never headers or
    # bodies; the bearer is redacted anyway, should that ever change.
    detail = redact(str(error) or type(error).__name__, [call.bearer])
    return ServerUnreachable(f"cannot reach the server ({type(error).__name__}: {detail})")


def send(client: httpx.Client, call: Call) -> Reply:
    try:
        response = client.request(call.method, call.path, **_request_args(call))
    except httpx.TransportError as e:
        raise _unreachable(e, call) from None
    return _reply(response)


async def send_async(client: httpx.AsyncClient, call: Call) -> Reply:
    try:
        response = await client.request(call.method, call.path, **_request_args(call))
    except httpx.TransportError as e:
        raise _unreachable(e, call) from None
    return _reply(response)


def run(flow: Flow[T], client: httpx.Client, sleep: Callable[[float], None]) -> T:
    """Runs ``flow`` to its result, blocking."""
    answer: Reply | None = None
    failure: ServerUnreachable | None = None
    try:
        while True:
            try:
                step = flow.throw(failure) if failure is not None else flow.send(answer)
            except StopIteration as stop:
                result: T = stop.value
                return result
            answer, failure = None, None
            if isinstance(step, Sleep):
                sleep(step.seconds)
            else:
                try:
                    answer = send(client, step)
                except ServerUnreachable as e:
                    failure = e
    finally:
        flow.close()


async def run_async(
    flow: Flow[T],
    client: httpx.AsyncClient,
    sleep: Callable[[float], Awaitable[None]],
) -> T:
    """Runs ``flow`` to its result on the event loop."""
    answer: Reply | None = None
    failure: ServerUnreachable | None = None
    try:
        while True:
            try:
                step = flow.throw(failure) if failure is not None else flow.send(answer)
            except StopIteration as stop:
                result: T = stop.value
                return result
            answer, failure = None, None
            if isinstance(step, Sleep):
                await sleep(step.seconds)
            else:
                try:
                    answer = await send_async(client, step)
                except ServerUnreachable as e:
                    failure = e
    finally:
        flow.close()


def new_client(url: str, app: str, timeout: float) -> httpx.Client:
    return httpx.Client(
        base_url=url.rstrip("/"),
        timeout=timeout,
        headers={"user-agent": user_agent(app)},
    )


def new_async_client(url: str, app: str, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url.rstrip("/"),
        timeout=timeout,
        headers={"user-agent": user_agent(app)},
    )
