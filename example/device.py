"""The device: BLE provisioning (GATT server), then MQTT over mutual TLS with AWS IoT.

    python device.py --transport tcp-client:127.0.0.1:PORT --dsn SN-0001 \
        --state-dir .local/devices/SN-0001 --ca pinned-ca.pem \
        --mqtt-endpoint 127.0.0.1:8883 --mqtt-ca broker-ca.pem

With no valid credentials in --state-dir the device makes a fresh X25519 key pair, advertises
the onboarding service (docs/ble-protocol.md) and waits for the phone app. It stores the
certificate and private key only after checking that the key decrypts, matches the certificate,
and that the certificate is issued by the pinned CA (--ca). Then it connects to the IoT
endpoint with the AWS IoT Device SDK v2 (client id = thing name) and publishes a hello message
on things/<thing>/hello. With valid credentials already stored it skips straight to MQTT.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from onboarding_ble import credentials, protocol
from onboarding_ble.credentials import Credentials
from onboarding_ble.offline import OfflineStack, OfflineStateError
from onboarding_ble.protocol import ProtocolError, Status, StatusReport

logger = logging.getLogger("device")

EXIT_OK = 0
EXIT_PROVISIONING = 3
EXIT_MQTT = 4


class ProvisioningSession:
    """The device side of the GATT protocol, free of bumble so it can be tested directly.

    Writes raise ProtocolError (the caller turns it into an ATT error); every state change
    goes through `on_status`, which the BLE layer notifies to subscribers.
    """

    def __init__(
        self,
        dsn: str,
        cas: list[x509.Certificate],
        state_dir: Path,
        on_status: Callable[[StatusReport], None] = lambda _report: None,
        private_key: X25519PrivateKey | None = None,
    ) -> None:
        self.dsn = protocol.validate_dsn(dsn)
        self.cas = cas
        self.state_dir = state_dir
        self.on_status = on_status
        self._private_key = private_key or X25519PrivateKey.generate()
        self.status = StatusReport(Status.IDLE)
        self.credentials: Credentials | None = None
        self.owner: object | None = None  # the connection that sent BEGIN
        self._transfer: protocol.Reassembler | None = None

    @property
    def public_key(self) -> bytes:
        return self._private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def device_info(self) -> bytes:
        return protocol.DeviceInfo(dsn=self.dsn, public_key=self.public_key).encode()

    def _set(self, status: Status, detail: str = "") -> None:
        received = self._transfer.received if self._transfer else 0
        self.status = StatusReport(status, received, detail)
        logger.info("status %s %s", status.name, detail)
        self.on_status(self.status)

    def _fail(self, error: ProtocolError) -> ProtocolError:
        self._transfer = None
        self._set(error.status, str(error))
        return error

    def _check_owner(self, connection: object) -> None:
        if self.status.status is Status.PROVISIONED:
            raise ProtocolError(Status.ERR_STATE, "already provisioned")
        if self.owner is not None and connection is not self.owner:
            raise ProtocolError(Status.ERR_BUSY, "another app is provisioning this device")

    def write_control(self, value: bytes, connection: object = None) -> None:
        try:
            self._check_owner(connection)
            command = protocol.decode_control(value)
        except ProtocolError as exc:
            if exc.status in (Status.ERR_BUSY, Status.ERR_STATE):
                raise  # do not disturb the session in progress
            raise self._fail(exc) from None
        if isinstance(command, protocol.Begin):
            self.owner = connection
            self._transfer = protocol.Reassembler(command)
            self._set(Status.RECEIVING)
        elif isinstance(command, protocol.Abort):
            self._reset()
        elif isinstance(command, protocol.AppError):
            self._transfer = None
            logger.warning(
                "app reports API error %s %s: %s",
                command.http_status,
                command.code,
                command.message,
            )
            self._set(Status.ERR_APP, f"{command.http_status} {command.code}")
        else:
            self._commit()

    def write_data(self, value: bytes, connection: object = None) -> None:
        self._check_owner(connection)
        if self._transfer is None:
            raise self._fail(ProtocolError(Status.ERR_STATE, "DATA before BEGIN"))
        try:
            self._transfer.add(value)
        except ProtocolError as exc:
            raise self._fail(exc) from None
        self.status = StatusReport(Status.RECEIVING, self._transfer.received)

    def _commit(self) -> None:
        if self._transfer is None:
            raise self._fail(ProtocolError(Status.ERR_STATE, "COMMIT before BEGIN"))
        try:
            payload = self._transfer.finish()
            self._set(Status.VERIFYING)
            answer = credentials.verify_answer(payload, self._private_key, self.dsn, self.cas)
            try:
                self.credentials = credentials.store(self.state_dir, answer)
            except OSError as exc:
                raise ProtocolError(Status.ERR_STORAGE, "cannot store credentials") from exc
        except ProtocolError as exc:
            self._fail(exc)
            return
        self._transfer = None
        self._set(Status.PROVISIONED, self.credentials.thing_name)

    def _reset(self) -> None:
        self._transfer = None
        self.owner = None
        self._set(Status.IDLE)

    def disconnected(self, connection: object) -> None:
        """A dropped link ends the session: the app reconnects and starts again with BEGIN."""
        if connection is self.owner and self.status.status is not Status.PROVISIONED:
            self._reset()


async def provision_over_ble(
    transport_spec: str, session: ProvisioningSession, address: str | None
) -> Credentials:
    """Advertise the onboarding service until an app has provisioned the device."""
    from bumble import data_types, gatt
    from bumble.att import ATT_Error
    from bumble.core import UUID, AdvertisingData
    from bumble.device import Device, DeviceConfiguration
    from bumble.hci import Address
    from bumble.transport import open_transport

    async with await open_transport(transport_spec) as hci_transport:
        config = DeviceConfiguration()
        config.name = session.dsn
        config.address = Address(address) if address else Address.generate_static_address()
        device = Device.from_config_with_hci(config, hci_transport.source, hci_transport.sink)
        done: asyncio.Future[Credentials] = asyncio.get_running_loop().create_future()
        tasks: set[asyncio.Task[None]] = set()

        def guarded(handler: Callable[[bytes, object], None]) -> Callable[[Any, bytes], None]:
            def write(connection: Any, value: bytes) -> None:
                try:
                    handler(bytes(value), connection)
                except ProtocolError as exc:
                    raise ATT_Error(int(exc.status)) from None
                if session.credentials is not None and not done.done():
                    done.set_result(session.credentials)

            return write

        status_char: gatt.Characteristic[bytes] = gatt.Characteristic(
            protocol.STATUS_UUID,
            gatt.Characteristic.Properties.READ | gatt.Characteristic.Properties.NOTIFY,
            gatt.Characteristic.READABLE,
            gatt.CharacteristicValue(read=lambda _c: session.status.encode()),
        )

        def notify(report: StatusReport) -> None:
            task = asyncio.create_task(device.notify_subscribers(status_char, report.encode()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        session.on_status = notify
        writable = gatt.Characteristic.WRITEABLE
        write = gatt.Characteristic.Properties.WRITE
        device.add_service(
            gatt.Service(
                protocol.SERVICE_UUID,
                [
                    gatt.Characteristic(
                        protocol.DEVICE_INFO_UUID,
                        gatt.Characteristic.Properties.READ,
                        gatt.Characteristic.READABLE,
                        gatt.CharacteristicValue(read=lambda _c: session.device_info()),
                    ),
                    gatt.Characteristic(
                        protocol.CONTROL_UUID,
                        write,
                        writable,
                        gatt.CharacteristicValue(write=guarded(session.write_control)),
                    ),
                    gatt.Characteristic(
                        protocol.DATA_UUID,
                        write,
                        writable,
                        gatt.CharacteristicValue(write=guarded(session.write_data)),
                    ),
                    status_char,
                ],
            )
        )

        def on_connection(connection: Any) -> None:
            logger.info("app connected from %s", connection.peer_address)
            connection.on(
                connection.EVENT_DISCONNECTION,
                lambda _reason: session.disconnected(connection),
            )

        device.on(device.EVENT_CONNECTION, on_connection)
        await device.power_on()
        name, complete = protocol.advertised_name(session.dsn)
        name_type = data_types.CompleteLocalName if complete else data_types.ShortenedLocalName
        advertising_data = AdvertisingData(
            [
                data_types.Flags(
                    AdvertisingData.Flags.LE_GENERAL_DISCOVERABLE_MODE
                    | AdvertisingData.Flags.BR_EDR_NOT_SUPPORTED
                ),
                data_types.ServiceData128BitUUID(
                    UUID(protocol.SERVICE_UUID), protocol.encode_service_data(session.dsn)
                ),
            ]
        )
        await device.start_advertising(
            auto_restart=True,
            advertising_data=bytes(advertising_data),
            scan_response_data=bytes(AdvertisingData([name_type(name)])),
        )
        print(f"ADVERTISING dsn={session.dsn} address={device.random_address}", flush=True)
        result = await done
        # Give the app a moment to read the final status, then leave the radio.
        await asyncio.sleep(0.5)
        await device.stop_advertising()
        for connection in list(device.connections.values()):
            try:
                await connection.disconnect()
            except Exception:
                logger.debug("disconnect failed", exc_info=True)
        await device.power_off()
        return result


def _split_endpoint(endpoint: str, default_port: int) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return endpoint, default_port


def publish_hello(
    creds: Credentials,
    endpoint: str,
    mqtt_ca: Path | None,
    dsn: str,
    client_id: str | None = None,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """Connect with mutual TLS (client id = thing name) and publish things/<thing>/hello."""
    from awscrt import mqtt
    from awsiot import mqtt_connection_builder

    host, port = _split_endpoint(endpoint, 8883)
    connection = mqtt_connection_builder.mtls_from_path(
        endpoint=host,
        port=port,
        cert_filepath=str(creds.cert_path),
        pri_key_filepath=str(creds.key_path),
        ca_filepath=str(mqtt_ca) if mqtt_ca else None,
        client_id=client_id or creds.thing_name,
        clean_session=True,
        keep_alive_secs=30,
    )
    connection.connect().result(timeout)
    try:
        topic = f"things/{creds.thing_name}/hello"
        message = {
            "thingName": creds.thing_name,
            "dsn": dsn,
            "certificateId": creds.certificate_id,
            "message": "hello",
            "at": dt.datetime.now(dt.UTC).isoformat(),
        }
        future, _packet_id = connection.publish(
            topic=topic, payload=json.dumps(message), qos=mqtt.QoS.AT_LEAST_ONCE
        )
        future.result(timeout)
        logger.info("published hello on %s", topic)
        return message
    finally:
        connection.disconnect().result(timeout)


async def async_main(args: argparse.Namespace) -> int:
    cas = credentials.load_ca(args.ca.read_bytes())
    credentials.ensure_state_dir(args.state_dir)
    creds = credentials.load_valid(args.state_dir, cas)
    if creds is None:
        session = ProvisioningSession(args.dsn, cas, args.state_dir)
        try:
            creds = await asyncio.wait_for(
                provision_over_ble(args.transport, session, args.address),
                timeout=args.provision_timeout or None,
            )
        except TimeoutError:
            logger.error("not provisioned within %s s", args.provision_timeout)
            return EXIT_PROVISIONING
        print(f"PROVISIONED thing={creds.thing_name} cert={creds.certificate_id}", flush=True)
    else:
        print(f"CREDENTIALS thing={creds.thing_name} cert={creds.certificate_id}", flush=True)

    if args.no_mqtt:
        return EXIT_OK
    endpoint = args.mqtt_endpoint or creds.iot_endpoint
    if not endpoint:
        logger.error("no IoT endpoint: pass --mqtt-endpoint")
        return EXIT_MQTT
    try:
        await asyncio.to_thread(publish_hello, creds, endpoint, args.mqtt_ca, args.dsn)
    except Exception as exc:
        logger.error("MQTT failed: %s", type(exc).__name__)
        print(f"MQTT_FAILED {type(exc).__name__}", flush=True)
        return EXIT_MQTT
    print(f"HELLO_PUBLISHED topic=things/{creds.thing_name}/hello", flush=True)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="device.py",
        description="IoT device: BLE provisioning, then MQTT with mutual TLS.",
    )
    parser.add_argument(
        "--transport",
        required=True,
        help="HCI transport: tcp-client:127.0.0.1:PORT (virtual radio) or usb:0",
    )
    parser.add_argument("--dsn", required=True, help="device serial number")
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="per-device directory (created 0700)"
    )
    parser.add_argument(
        "--ca", type=Path, required=True, help="pinned device CA certificate(s), PEM"
    )
    parser.add_argument("--address", help="static random BLE address (default: random)")
    parser.add_argument(
        "--provision-timeout",
        type=float,
        default=0,
        help="give up provisioning after this many seconds (0 = wait forever)",
    )
    parser.add_argument(
        "--mqtt-endpoint", help="HOST[:PORT] (default: the IoT endpoint from provisioning, 8883)"
    )
    parser.add_argument("--mqtt-ca", type=Path, help="CA that signed the broker's certificate")
    parser.add_argument(
        "--state",
        type=Path,
        help="offline stack state file (.local/stack.json): connect to its MQTT broker "
        "(--mqtt-endpoint and --mqtt-ca win)",
    )
    parser.add_argument("--no-mqtt", action="store_true", help="stop after provisioning")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s device %(levelname)s %(message)s",
    )
    try:
        protocol.validate_dsn(args.dsn)
        if args.state is not None:
            stack = OfflineStack.load(args.state)
            args.mqtt_endpoint = args.mqtt_endpoint or stack.mqtt_endpoint
            args.mqtt_ca = args.mqtt_ca or stack.mqtt_ca
    except (ProtocolError, OfflineStateError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(async_main(args))


if __name__ == "__main__":
    sys.exit(main())
