"""The virtual radio ends a connection attempt its host gave up on, as a real controller does.

A phone (or the Web Bluetooth bridge) that calls a device which has just died waits out its
connect timeout, cancels the attempt, and must be able to call the next device at once.
"""

from __future__ import annotations

import asyncio

import pytest
from bumble import core
from bumble.device import Device
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from onboarding_ble.radio import RadioController

GONE = "C1:C2:C3:C4:C5:C6"  # nobody advertises here: the device died
LIVE = "D1:D2:D3:D4:D5:D6"


def test_after_a_timed_out_connect_the_next_device_can_be_called() -> None:
    async def scenario() -> str:
        # GIVEN a phone and one live device advertising on the radio
        link = LocalLink()  # type: ignore[no-untyped-call]
        phone_radio, device_radio = (RadioController(name, link=link) for name in ("phone", "dev"))
        phone = Device(
            address=Address("F5:F4:F3:F2:F1:F0"), host=Host(phone_radio, AsyncPipeSink(phone_radio))
        )
        device = Device(address=Address(LIVE), host=Host(device_radio, AsyncPipeSink(device_radio)))
        await phone.power_on()
        await device.power_on()
        await device.start_advertising(auto_restart=True)
        # WHEN the phone calls a device that is gone, and gives up after its timeout
        with pytest.raises(core.TimeoutError):
            await asyncio.wait_for(phone.connect(Address(GONE), timeout=0.5), 5)
        # THEN its next call, to the live device, connects (it was refused with Command
        # Disallowed while the first attempt stayed pending)
        connection = await asyncio.wait_for(phone.connect(Address(LIVE), timeout=5), 10)
        return str(connection.peer_address)

    assert asyncio.run(scenario()).startswith(LIVE)
