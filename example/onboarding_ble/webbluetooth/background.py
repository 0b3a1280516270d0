"""The bridge on a thread of its own, for a synchronous caller (Playwright's sync API in the
tests): its own event loop, its radio host and its DevTools connection; ``stop()`` ends all."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from onboarding_ble.webbluetooth.bridge import Bridge, Choose, open_radio
from onboarding_ble.webbluetooth.cdp import CdpConnection

T = TypeVar("T")

START_TIMEOUT = 30.0


class BridgeThread:
    def __init__(self, ws_url: str, transport: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._ready: Future[Bridge] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ws_url, transport), name="webbluetooth-bridge", daemon=True
        )
        self._thread.start()
        self.bridge = self._ready.result(START_TIMEOUT)

    def _run(self, ws_url: str, transport: str) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main(ws_url, transport))

    async def _main(self, ws_url: str, transport: str) -> None:
        self._stopping = asyncio.Event()
        try:
            hci, radio = await open_radio(transport)
            cdp = await CdpConnection.connect(ws_url)
            bridge = Bridge(cdp, radio)
            await bridge.start()
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(bridge)
        try:
            await self._stopping.wait()
        finally:
            await bridge.close()
            await cdp.close()
            await hci.close()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coroutine`` on the bridge's loop; its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def set_choose(self, choose: Choose) -> None:
        self._loop.call_soon_threadsafe(setattr, self.bridge, "choose", choose)

    def cut_links_after_data_writes(self, writes: int | None) -> None:
        """Until called with None, cut every link instead of making its DATA write number
        ``writes`` + 1."""
        self._loop.call_soon_threadsafe(setattr, self.bridge, "cut_links_after_data_writes", writes)

    def stop(self) -> None:
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(15)
