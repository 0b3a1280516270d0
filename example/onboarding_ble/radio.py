"""A virtual BLE radio: bumble controllers on one shared link, one HCI transport each.

    .venv/bin/python -m onboarding_ble.radio tcp-server:127.0.0.1:0 tcp-server:127.0.0.1:0

Each transport spec gets its own controller; a host (device.py, provisioning_app.py) connects
to it as `tcp-client:127.0.0.1:PORT`. Port 0 picks a free port; the ports actually bound are
printed as one event line (`RADIO_READY transports=tcp-client:127.0.0.1:PORT,...`, see
onboarding_ble.events) and written to --ready-file as JSON
(`{"transports": [...]}`), so a parent process knows when the radio is up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bumble import hci
from bumble.controller import Controller
from bumble.link import LocalLink
from bumble.transport import open_transport

from onboarding_ble import events

logger = logging.getLogger("onboarding_ble.radio")


async def open_host(transport_spec: str, name: str) -> tuple[Any, Any]:
    """A powered-on bumble host called ``name`` (a static random address) on the controller at
    ``transport_spec``: the HCI transport, to close when done, and the device. What the
    provisioning app and the Web Bluetooth bridge each put on the radio."""
    from bumble.device import Device, DeviceConfiguration
    from bumble.hci import Address

    transport = await open_transport(transport_spec)
    config = DeviceConfiguration()
    config.name = name
    config.address = Address.generate_static_address()
    device = Device.from_config_with_hci(config, transport.source, transport.sink)
    await device.power_on()
    return transport, device


class RadioController(Controller):
    """bumble's virtual controller, with a cancelled connection attempt ended as a real
    controller ends it (Core spec Vol 4, Part E, 7.8.13).

    bumble's answers the cancel with success and nothing more: the attempt stays pending, so a
    host whose connect timed out (the device it called had died) is refused every later
    connect with Command Disallowed until the radio restarts. Here the attempt is dropped and
    the host told, after the command's answer, with an LE Connection Complete event whose
    status is Unknown Connection Identifier; a cancel with nothing pending is Command
    Disallowed.
    """

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        event = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        asyncio.get_running_loop().call_soon(self.send_hci_packet, event)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


def _client_spec(spec: str, transport: Any) -> str:
    """The spec a host uses to reach `transport` (the bound port when the spec said 0)."""
    server = getattr(transport, "server", None)
    if spec.startswith("tcp-server:") and server is not None and server.sockets:
        host, port = server.sockets[0].getsockname()[:2]
        return f"tcp-client:{host}:{port}"
    return spec


async def async_main(specs: Sequence[str], ready_file: Path | None) -> int:
    link = LocalLink()  # type: ignore[no-untyped-call]
    transports = []
    controllers = []
    try:
        for index, spec in enumerate(specs):
            transport = await open_transport(spec)
            transports.append(transport)
            controllers.append(
                RadioController(
                    f"C{index}",
                    host_source=transport.source,
                    host_sink=transport.sink,
                    link=link,
                )
            )
        ready = [_client_spec(s, t) for s, t in zip(specs, transports, strict=True)]
        if ready_file is not None:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"transports": ready}) + "\n", encoding="utf-8")
            os.replace(tmp, ready_file)
        events.emit(events.RadioReady(tuple(ready)))

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        for transport in transports:
            await transport.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=".venv/bin/python -m onboarding_ble.radio",
        description="Virtual BLE radio: bumble controllers on a shared link, one per transport.",
    )
    parser.add_argument(
        "transports",
        nargs="+",
        metavar="TRANSPORT",
        help="HCI transport per controller, e.g. tcp-server:127.0.0.1:0 (0 = free port)",
    )
    parser.add_argument("--ready-file", type=Path, help="write the client specs here as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s radio %(levelname)s %(message)s",
    )
    if len(args.transports) < 2:
        parser.error("a radio needs at least two controllers")
    return asyncio.run(async_main(args.transports, args.ready_file))


if __name__ == "__main__":
    sys.exit(main())
