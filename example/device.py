"""The device: BLE provisioning (GATT server), then MQTT over mutual TLS with AWS IoT.

    .venv/bin/python example/device.py --transport tcp-client:127.0.0.1:PORT --dsn SN-0001 \
        --state-dir .local/devices/SN-0001 --ca pinned-ca.pem --thing-prefix device \
        --iot-endpoint 127.0.0.1:8883 --mqtt-ca broker-ca.pem

Its firmware configuration (``DeviceOptions``) is what the factory sets and the relay cannot
change: the pinned CA, the IoT data endpoint, the fleet's thing prefix and the weakest
key-encryption scheme it accepts. ``main`` reads it from ``firmware.json`` in --state-dir (see
``read_firmware_file``), the command line winning over the file, and the offline stack's
state file (--state) filling in the endpoint, broker CA and prefix of a local stack.

In CSR mode (``keyMode: "csr"`` in firmware.json, or --key-mode csr) the device makes its own
EC P-256 key and a CSR instead, and the app relays the CSR (docs/ble-protocol.md); the key
never leaves the device.

With no valid credentials in --state-dir the device makes a fresh X25519 key pair, advertises
the onboarding service (docs/ble-protocol.md) and waits for the phone app. It stores the
certificate and private key only after credentials.verify_answer accepts them (section 1.1 of
the protocol: a client certificate with a path to the pinned CA that names this DSN, the key
its key, the scheme at least the minimum). Then it connects to the configured IoT endpoint
(never one from the answer) with the AWS IoT Device SDK v2 (client id = thing name) and
publishes a hello message on things/<thing>/hello. With valid credentials already stored (and
still naming this DSN) it skips straight to MQTT.

A device whose stored certificate has expired (found at boot, or when the broker refuses it
near or after its notAfter: ``expired_credentials``) prints CREDENTIALS_EXPIRED and advertises
the onboarding service again, without a factory reset: its state folder (its attestation key
among it) stays, and its owner onboards it through the app as the same thing (a recovery).

With --stay (or --renewals N) it then stays connected and renews its certificate itself
(onboarding_ble.renewal): at a random moment of 60-70 % of the certificate's lifetime
(--renew-after shortens this for the demo) or when the cloud publishes on
things/<thing>/certificate/renew/due (at a random moment of the spread it names), with a new
key and CSR over MQTT; a failed renewal keeps the old credentials and is retried after a
jittered backoff.

The GATT service is onboarding_ble.gatt's; what the device does is printed as event lines
(onboarding_ble.events), its logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bumble.transport.common import TransportSpecError

from onboarding_ble import attestation, credentials, events, gatt, protocol, renewal, rules
from onboarding_ble.credentials import Credentials
from onboarding_ble.gatt import OnboardingService, ProvisioningSession
from onboarding_ble.offline import OfflineStack, OfflineStateError
from onboarding_ble.protocol import ProtocolError

logger = logging.getLogger("device")

EXIT_OK = 0
EXIT_USAGE = 2  # a mistake in the command line or the firmware configuration
EXIT_PROVISIONING = 3
EXIT_MQTT = 4


FIRMWARE_FILE = "firmware.json"
_FIRMWARE_KEYS = {
    "ca": "ca",
    "iotEndpoint": "iot_endpoint",
    "mqttCa": "mqtt_ca",
    "thingPrefix": "thing_prefix",
    "minimumScheme": "minimum_scheme",
    "keyMode": "key_mode",
}
KEY_MODES = ("publicKey", "csr")  # publicKey: the seed-compatible default


class FirmwareConfigError(ValueError):
    """The firmware configuration is missing a setting or holds one the device refuses."""


@dataclass(frozen=True)
class DeviceOptions:
    """What the device is told at boot (``main`` builds it from the command line and
    ``firmware.json``). The firmware settings are the device's, never the relay's."""

    transport: str  # HCI transport: tcp-client:127.0.0.1:PORT (virtual radio) or usb:0
    dsn: str
    state_dir: Path
    ca: Path  # firmware: the pinned device CA certificate(s), PEM
    address: str | None = None  # static random BLE address; None: a fresh random one
    provision_timeout: float = 0  # seconds; 0 waits for ever
    iot_endpoint: str | None = None  # firmware: HOST[:PORT]; required unless mqtt is False
    mqtt_ca: Path | None = None  # the CA that signed the broker's certificate
    thing_prefix: str | None = None  # firmware: the fleet's ThingPrefix; None: read from the CN
    minimum_scheme: str = rules.FERNET_X25519  # firmware: the weakest key encryption accepted
    mqtt: bool = True  # False: stop after provisioning
    key_mode: str = "publicKey"  # firmware: "csr" makes the device's own key and sends a CSR
    stay: bool = False  # stay connected after the hello, renewing when due (until stopped)
    renewals: int | None = None  # stay connected until this many renewals completed
    renew_after: float | None = None  # renew this long after connecting (demo); None: the window
    renewal_backoff: float = 30.0  # shortest delay after a failed renewal (jittered, up to 1 h)
    answer_timeout: float = renewal.ANSWER_TIMEOUT  # seconds to wait for accepted/rejected
    # A factory attestation key (made on the first run in the state folder) vouches for the key
    # to certify, served in DEVICE_ATTESTATION; off: the device serves none (as before).
    attestation: bool = False

    def __post_init__(self) -> None:
        if self.thing_prefix is not None and not rules.THING_PREFIX_PATTERN.fullmatch(
            self.thing_prefix
        ):
            raise FirmwareConfigError(
                f"thing prefix {self.thing_prefix!r} breaks the ThingPrefix rule "
                f"({rules.THING_PREFIX_PATTERN.pattern})"
            )
        if self.minimum_scheme not in rules.ENCRYPTION_SCHEMES:
            raise FirmwareConfigError(f"unknown minimum scheme {self.minimum_scheme!r}")
        if self.key_mode not in KEY_MODES:
            raise FirmwareConfigError(f"unknown key mode {self.key_mode!r} (one of {KEY_MODES})")
        if self.renewals is not None and self.renewals < 0:
            raise FirmwareConfigError("--renewals must be 0 or more")
        if (self.renew_after is not None and self.renew_after < 0) or self.renewal_backoff <= 0:
            raise FirmwareConfigError("renewal delays must be positive")
        if self.mqtt and not self.iot_endpoint:
            raise FirmwareConfigError(
                "no IoT endpoint: configure it (--iot-endpoint, iotEndpoint in "
                f"{FIRMWARE_FILE}, or --state offline); the answer's is never used"
            )


def read_firmware_file(path: Path) -> dict[str, Any]:
    """Settings from a firmware file: a JSON object with any of ``ca``, ``iotEndpoint``,
    ``mqttCa``, ``thingPrefix``, ``minimumScheme``, ``keyMode`` (paths relative to the file's
    folder), as ``DeviceOptions`` field names. Unknown keys are refused: a misspelt security setting
    must not be silently ignored."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FirmwareConfigError(f"{path}: not a firmware file ({exc})") from exc
    if not isinstance(raw, dict):
        raise FirmwareConfigError(f"{path}: must hold a JSON object")
    unknown = sorted(set(raw) - set(_FIRMWARE_KEYS))
    if unknown:
        raise FirmwareConfigError(f"{path}: unknown settings {', '.join(unknown)}")
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(value, str) or not value:
            raise FirmwareConfigError(f"{path}: {key} must be a non-empty string")
        field_name = _FIRMWARE_KEYS[key]
        settings[field_name] = path.parent / value if field_name in ("ca", "mqtt_ca") else value
    return settings


async def provision_over_ble(
    transport_spec: str, session: ProvisioningSession, address: str | None
) -> Credentials:
    """Advertise the onboarding service until an app has provisioned the device."""
    from bumble.device import Device, DeviceConfiguration
    from bumble.hci import Address
    from bumble.transport import open_transport

    async with await open_transport(transport_spec) as hci_transport:
        config = DeviceConfiguration()
        config.name = session.dsn
        config.address = Address(address) if address else Address.generate_static_address()
        device = Device.from_config_with_hci(config, hci_transport.source, hci_transport.sink)
        service = OnboardingService(
            device,
            session,
            on_status=lambda report: events.emit(
                events.StatusChanged(report.status.name, report.detail)
            ),
        )
        device.add_service(service)

        def on_connection(connection: Any) -> None:
            logger.info("app connected from %s", connection.peer_address)
            service.on_connection(connection)

        device.on(device.EVENT_CONNECTION, on_connection)
        await device.power_on()
        advertisement, scan_response = gatt.advertising_data(session.dsn)
        await device.start_advertising(
            auto_restart=True, advertising_data=advertisement, scan_response_data=scan_response
        )
        events.emit(events.Advertising(session.dsn, str(device.random_address)))
        result = await service.provisioned
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
    if sep and port.isascii() and port.isdigit():
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


class CrtLink:
    """A ``renewal.Link`` over the AWS IoT Device SDK v2 (mutual TLS, client id = thing)."""

    def __init__(
        self, creds: Credentials, endpoint: str, mqtt_ca: Path | None, timeout: float = 15.0
    ) -> None:
        from awsiot import mqtt_connection_builder

        host, port = _split_endpoint(endpoint, 8883)
        self._timeout = timeout
        self._connection = mqtt_connection_builder.mtls_from_path(
            endpoint=host,
            port=port,
            cert_filepath=str(creds.cert_path),
            pri_key_filepath=str(creds.key_path),
            ca_filepath=str(mqtt_ca) if mqtt_ca else None,
            client_id=creds.thing_name,
            clean_session=True,
            keep_alive_secs=30,
        )
        self._connection.connect().result(timeout)

    def subscribe(self, topic_filter: str, callback: Any) -> None:
        from awscrt import mqtt

        def on_message(topic: str, payload: bytes, **_: Any) -> None:
            callback(topic, bytes(payload))

        future, _id = self._connection.subscribe(topic_filter, mqtt.QoS.AT_LEAST_ONCE, on_message)
        future.result(self._timeout)

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        from awscrt import mqtt

        future, _id = self._connection.publish(
            topic=topic, payload=json.dumps(payload), qos=mqtt.QoS.AT_LEAST_ONCE
        )
        future.result(self._timeout)

    def close(self) -> None:
        try:
            self._connection.disconnect().result(self._timeout)
        except Exception:
            logger.debug("disconnect failed", exc_info=True)


def run_connected(
    options: DeviceOptions,
    candidates: list[Credentials],
    cas: list[Any],
    stop: threading.Event,
) -> Credentials:
    """Connect (finishing a renewal that was stored but not promoted), publish the hello, then,
    with --stay or --renewals, stay connected and renew (onboarding_ble.renewal)."""
    endpoint = options.iot_endpoint or ""
    settings = renewal.RenewalSettings(
        dsn=options.dsn,
        cas=tuple(cas),
        iot_endpoint=endpoint,
        thing_prefix=options.thing_prefix,
        renew_after=options.renew_after,
        answer_timeout=options.answer_timeout,
        backoff_first=options.renewal_backoff,
    )
    device = renewal.ConnectedDevice.boot(
        options.state_dir,
        candidates,
        settings,
        lambda creds: CrtLink(creds, endpoint, options.mqtt_ca),
    )
    try:
        creds = device.creds
        assert device.link is not None
        device.link.publish(f"things/{creds.thing_name}/hello", hello_message(creds, options.dsn))
        logger.info("published hello on things/%s/hello", creds.thing_name)
        events.emit(events.HelloPublished(f"things/{creds.thing_name}/hello"))
        if options.stay or options.renewals is not None:
            device.run(stop, options.renewals)
        return device.creds
    finally:
        device.close()


def hello_message(creds: Credentials, dsn: str) -> dict[str, Any]:
    return {
        "thingName": creds.thing_name,
        "dsn": dsn,
        "certificateId": creds.certificate_id,
        "message": "hello",
        "at": dt.datetime.now(dt.UTC).isoformat(),
    }


# A broker's refusal this close to the certificate's end is taken for expiry: the device's
# clock may lag the broker's (IoT Core checks notAfter by its own clock).
EXPIRY_SKEW = dt.timedelta(minutes=5)


def expired_credentials(
    options: DeviceOptions,
    cas: list[Any],
    now: dt.datetime | None = None,
    *,
    refused: bool = False,
) -> Credentials | None:
    """The device's choice when it has no valid credentials (at boot) or the broker refused
    the ones it has (``refused``): stored credentials of this DSN whose certificate has run out
    (after a refusal: or runs out within ``EXPIRY_SKEW``) mean "onboard me again", so the device
    advertises the onboarding service, keeping its state folder, instead of stopping. None:
    nothing expired (no credentials, other ones, or a refusal for another reason)."""
    return credentials.load_expired(
        options.state_dir,
        cas,
        now,
        dsn=options.dsn,
        thing_prefix=options.thing_prefix,
        skew=EXPIRY_SKEW if refused else dt.timedelta(),
    )


def _onboard_again(expired: Credentials) -> None:
    """Say why the device advertises again; a renewal left in next/ (expired too) goes."""
    logger.warning("the certificate has expired: advertising the onboarding service again")
    renewal.discard_next(expired.directory)
    events.emit(
        events.CredentialsExpired(expired.thing_name, expired.certificate_id, expired.not_after)
    )


async def async_main(options: DeviceOptions) -> int:
    cas = credentials.load_ca(options.ca.read_bytes())
    credentials.ensure_state_dir(options.state_dir)
    candidates = renewal.load(
        options.state_dir, cas, dsn=options.dsn, thing_prefix=options.thing_prefix
    )
    if not candidates and (expired := expired_credentials(options, cas)) is not None:
        _onboard_again(expired)
    while True:
        creds = candidates[0] if candidates else None
        if creds is None:
            onboarded = await _onboard(options, cas)
            if isinstance(onboarded, int):
                return onboarded
            candidates = [onboarded]
        else:
            events.emit(events.HasCredentials(creds.thing_name, creds.certificate_id))

        if not options.mqtt or not options.iot_endpoint:
            return EXIT_OK
        # The endpoint is firmware configuration (options), never the answer's iotEndpoint.
        stop = threading.Event()
        try:
            await asyncio.to_thread(run_connected, options, candidates, cas, stop)
        except asyncio.CancelledError:
            stop.set()
            raise
        except Exception as exc:
            logger.error("MQTT failed: %s", type(exc).__name__)
            events.emit(events.MqttFailed(type(exc).__name__))
            expired = expired_credentials(options, cas, refused=True)
            if expired is None or options.transport == "none":
                return EXIT_MQTT
            _onboard_again(expired)  # refused for expiry: onboarded again, as at boot
            candidates = []
            continue
        return EXIT_OK


async def _onboard(options: DeviceOptions, cas: list[Any]) -> Credentials | int:
    """Advertise the onboarding service until the app has provisioned the device: its new
    credentials, or the exit code."""
    if options.transport == "none":
        logger.error(
            "no valid credentials in %s, and no BLE transport to be provisioned over",
            options.state_dir,
        )
        return EXIT_USAGE
    session = ProvisioningSession(
        options.dsn,
        cas,
        options.state_dir,
        thing_prefix=options.thing_prefix,
        minimum_scheme=options.minimum_scheme,
        iot_endpoint=options.iot_endpoint or "",
        csr_mode=options.key_mode == "csr",
        attestation_key=attestation.load_or_create(options.state_dir)
        if options.attestation
        else None,
    )
    try:
        creds = await asyncio.wait_for(
            provision_over_ble(options.transport, session, options.address),
            timeout=options.provision_timeout or None,
        )
    except (TransportSpecError, OSError) as exc:
        logger.error("cannot open the BLE transport %s: %s", options.transport, exc)
        return EXIT_USAGE
    except TimeoutError:
        logger.error("not provisioned within %s s", options.provision_timeout)
        return EXIT_PROVISIONING
    events.emit(events.Provisioned(creds.thing_name, creds.certificate_id))
    return creds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=".venv/bin/python example/device.py",
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
        "--ca",
        type=Path,
        help="pinned root CA certificate(s), PEM (required here or as ca in the firmware file)",
    )
    parser.add_argument("--address", help="static random BLE address (default: random)")
    parser.add_argument(
        "--provision-timeout",
        type=float,
        default=0,
        help="give up provisioning after this many seconds (0 = wait forever)",
    )
    parser.add_argument(
        "--iot-endpoint",
        "--mqtt-endpoint",
        dest="iot_endpoint",
        help="the account's IoT data endpoint, HOST[:PORT] (port 8883 if none); required "
        "unless --no-mqtt; the provisioning answer's iotEndpoint is never used",
    )
    parser.add_argument("--mqtt-ca", type=Path, help="CA that signed the broker's certificate")
    parser.add_argument(
        "--thing-prefix",
        help="the fleet's ThingPrefix: the certificate's thing name must be <prefix>_<DSN> "
        "(default: read from the certificate's common name)",
    )
    parser.add_argument(
        "--minimum-scheme",
        choices=rules.ENCRYPTION_SCHEMES_BY_STRENGTH,
        help="weakest key encryption accepted (default: fernet-x25519, which old apps ask for)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help=f"firmware file (default: STATE_DIR/{FIRMWARE_FILE} if it exists); "
        "the command line wins over it",
    )
    parser.add_argument(
        "--state",
        type=Path,
        help="offline stack state file (.local/stack.json): its MQTT broker as the endpoint, "
        "its broker CA and its ThingPrefix, where neither the command line nor the firmware "
        "file sets them",
    )
    parser.add_argument("--no-mqtt", action="store_true", help="stop after provisioning")
    parser.add_argument(
        "--key-mode",
        choices=KEY_MODES,
        help="publicKey (default): the service makes the key and sends it encrypted; csr: the "
        "device makes its own EC P-256 key, which never leaves it, and sends a CSR",
    )
    parser.add_argument(
        "--attestation",
        action="store_true",
        help="the device has a factory attestation key (EC P-256, made on the first run in the "
        "state folder, 0600; its public half in attestation-public.pem for the allowlist) and "
        "serves its signature over the DSN and the key to certify",
    )
    parser.add_argument(
        "--stay",
        action="store_true",
        help="stay connected after the hello, renewing the certificate at a random moment of "
        "60-70%% of its lifetime or when the cloud asks (renew/due), until interrupted",
    )
    parser.add_argument(
        "--renewals",
        type=int,
        metavar="N",
        help="stay connected until N renewals have completed, then exit",
    )
    parser.add_argument(
        "--renew-after",
        type=float,
        metavar="SECONDS",
        help="renew this many seconds after connecting instead of at a random moment of the "
        "certificate's lifetime (for the demo)",
    )
    parser.add_argument(
        "--renewal-backoff",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="shortest delay after a failed renewal; later ones are random, growing up to an "
        "hour (default 30)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s device %(levelname)s %(message)s",
    )
    try:
        options = options_from(args)
    except (ProtocolError, OfflineStateError, FirmwareConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        credentials.load_ca(options.ca.read_bytes())  # a firmware mistake: say so, early
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a PEM certificate"
        print(f"error: the pinned CA {options.ca}: {reason}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(async_main(options))


def options_from(args: argparse.Namespace) -> DeviceOptions:
    """The command line, over the firmware file, over the offline state file (part of main)."""
    protocol.validate_dsn(args.dsn)
    settings: dict[str, Any] = {}
    if args.state is not None:
        stack = OfflineStack.load(args.state)
        offline = {
            "iot_endpoint": stack.mqtt_endpoint,
            "mqtt_ca": stack.mqtt_ca,
            "thing_prefix": stack.thing_prefix,
        }
        settings.update({k: v for k, v in offline.items() if v is not None})
    config = args.config or args.state_dir / FIRMWARE_FILE
    if args.config is not None or config.exists():
        settings.update(read_firmware_file(config))
    given = {
        "ca": args.ca,
        "iot_endpoint": args.iot_endpoint,
        "mqtt_ca": args.mqtt_ca,
        "thing_prefix": args.thing_prefix,
        "minimum_scheme": args.minimum_scheme,
        "key_mode": args.key_mode,
    }
    settings.update({k: v for k, v in given.items() if v is not None})
    if "ca" not in settings:
        raise FirmwareConfigError(f"no pinned CA: --ca, or ca in {FIRMWARE_FILE}")
    return DeviceOptions(
        transport=args.transport,
        dsn=args.dsn,
        state_dir=args.state_dir,
        address=args.address,
        provision_timeout=args.provision_timeout,
        mqtt=not args.no_mqtt,
        stay=args.stay,
        renewals=args.renewals,
        renew_after=args.renew_after,
        renewal_backoff=args.renewal_backoff,
        attestation=args.attestation,
        **settings,
    )


if __name__ == "__main__":
    sys.exit(main())
