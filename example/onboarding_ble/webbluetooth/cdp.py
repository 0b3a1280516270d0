"""A DevTools protocol client: one websocket to the browser, sessions flattened on it.

Commands are answered by ``id``; events go to the handlers registered for their method
(with the ``sessionId`` they came on, None for the browser's own session). It is the
smallest thing the bridge needs; Playwright drives the same browser over a connection of
its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import websockets

logger = logging.getLogger("onboarding_ble.webbluetooth.cdp")

Handler = Callable[[dict[str, Any], str | None], Coroutine[Any, Any, None]]

COMMAND_TIMEOUT = 15.0  # seconds; the browser answers in milliseconds when it answers


class CdpError(Exception):
    """The browser refused a command (its error message), or the connection closed."""


class CdpConnection:
    def __init__(self, websocket: Any) -> None:
        self._ws = websocket
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[str, list[Handler]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, ws_url: str) -> CdpConnection:
        websocket = await websockets.connect(ws_url, max_size=None, ping_interval=None)
        connection = cls(websocket)
        connection._reader = asyncio.create_task(connection._read())
        return connection

    def on(self, method: str, handler: Handler) -> None:
        """Call ``handler(params, session_id)`` for every ``method`` event, in a task of its own
        (a handler may send commands and wait for their answers)."""
        self._handlers.setdefault(method, []).append(handler)

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        if self.closed.is_set():
            raise CdpError(f"{method}: the browser connection is closed")
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        try:
            await self._ws.send(json.dumps(message))
            answer = await asyncio.wait_for(future, COMMAND_TIMEOUT)
        except TimeoutError:
            raise CdpError(f"{method}: no answer from the browser") from None
        except websockets.ConnectionClosed:
            raise CdpError(f"{method}: the browser connection closed") from None
        finally:
            self._pending.pop(message_id, None)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error'].get('message', answer['error'])}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if "id" in message:
                    future = self._pending.get(message["id"])
                    if future is not None and not future.done():
                        future.set_result(message)
                    continue
                for handler in self._handlers.get(message.get("method", ""), []):
                    task = asyncio.create_task(
                        handler(message.get("params", {}), message.get("sessionId"))
                    )
                    self._tasks.add(task)
                    task.add_done_callback(self._handled)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CdpError("the browser connection closed"))

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("event handler failed: %s", task.exception())

    async def close(self) -> None:
        await self._ws.close()
        if self._reader is not None:
            await self._reader
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # ended, not left pending
