"""The onboarding GATT service, both sides, as bumble's profiles are written
(bumble/profiles/battery_service.py: a ``Service`` and a ``ServiceProxy``).

- ``ProvisioningSession``: the device's state machine (BEGIN, DATA in sequence, COMMIT, the
  verdict), free of bumble so it can be tested directly.
- ``OnboardingService``: the GATT server the device adds (DEVICE_INFO, CONTROL, DATA, STATUS),
  wired to a session; plus ``advertising_data`` for the advertisement.
- ``OnboardingServiceProxy``: the app's client: connect, negotiate the MTU, read the device,
  send a payload in chunks, wait for the verdict.

The wire format itself (UUIDs, byte layouts, status codes) is ``protocol``
(docs/ble-protocol.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bumble import data_types, gatt, gatt_client
from bumble.att import ATT_Error
from bumble.core import UUID, AdvertisingData
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from onboarding_ble import attestation, credentials, protocol, rules
from onboarding_ble.credentials import Credentials
from onboarding_ble.protocol import DeviceInfo, ProtocolError, Status, StatusReport

logger = logging.getLogger("onboarding_ble.gatt")


LEASE_SECONDS = 20.0  # a session with no write from its owner for this long is dropped
SESSION_MAX_SECONDS = 120.0  # and one that has not committed this long after BEGIN


class ProvisioningSession:
    """The device side of the GATT protocol, free of bumble so it can be tested directly.

    Writes raise ProtocolError (the service turns it into an ATT error); every state change
    goes through `on_status`, which the service notifies to subscribers.

    One connection at a time owns the session, from its BEGIN until COMMIT's verdict, an error,
    ABORT, its APP_ERROR or its disconnection; others get ERR_BUSY meanwhile. So that no app
    can hold the device hostage, the owner is also dropped when it has written nothing for
    ``lease`` seconds or has not finished ``max_session`` seconds after BEGIN (checked on the
    next write from anyone, and by ``expire_idle``, which the GATT service calls regularly).
    What the app says in APP_ERROR is logged only as printable ASCII of bounded length.
    """

    def __init__(
        self,
        dsn: str,
        cas: list[x509.Certificate],
        state_dir: Path,
        on_status: Callable[[StatusReport], None] = lambda _report: None,
        private_key: X25519PrivateKey | None = None,
        *,
        thing_prefix: str | None = None,
        minimum_scheme: str = rules.FERNET_X25519,
        iot_endpoint: str = "",
        lease: float = LEASE_SECONDS,
        max_session: float = SESSION_MAX_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        csr_mode: bool = False,
        attestation_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        self.dsn = protocol.validate_dsn(dsn)
        self.cas = cas
        self.state_dir = state_dir
        # Firmware configuration, handed to credentials.verify_answer: the relay's JSON cannot
        # change the fleet's thing prefix, lower the key-encryption scheme, or choose the
        # endpoint ("" when none is configured: the answer's iotEndpoint is never stored).
        self.thing_prefix = thing_prefix
        self.minimum_scheme = minimum_scheme
        self.iot_endpoint = iot_endpoint
        self.on_status = on_status
        self._private_key = private_key or X25519PrivateKey.generate()
        # CSR mode: the device's own EC P-256 key (RAM only until stored) and its CSR
        self.csr_mode = csr_mode
        self._csr_key: ec.EllipticCurvePrivateKey | None = None
        self.csr_der = b""
        if csr_mode:
            self._csr_key = ec.generate_private_key(ec.SECP256R1())
            self.csr_der = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.dsn)]))
                .sign(self._csr_key, hashes.SHA256())
                .public_bytes(Encoding.DER)
            )
        # The factory attestation key (None: the device has none and serves no
        # DEVICE_ATTESTATION); its signature covers the key this session asks to have certified
        # and the challenge the reading connection wrote (one per connection: another app in
        # range cannot swap the challenge an app is about to have signed).
        self.attestation_key = attestation_key
        self._challenges: dict[object, bytes] = {}
        self.status = StatusReport(Status.IDLE)
        self.credentials: Credentials | None = None
        self.owner: object | None = None  # the connection that sent BEGIN
        self._transfer: protocol.Reassembler | None = None
        self.lease = lease
        self.max_session = max_session
        self._clock = clock
        self._began = self._last_write = 0.0

    @property
    def public_key(self) -> bytes:
        return self._private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def accepted_schemes(self) -> tuple[str, ...]:
        """The key-encryption schemes this device accepts: its minimum and the stronger ones."""
        order = rules.ENCRYPTION_SCHEMES_BY_STRENGTH
        return order[order.index(self.minimum_scheme) :]

    @property
    def certified_key_der(self) -> bytes:
        """SubjectPublicKeyInfo (DER) of the key the service is asked to certify: the CSR's key
        in CSR mode, else the X25519 key the private key is to be encrypted to."""
        key: Any = self._csr_key.public_key() if self._csr_key else self._private_key.public_key()
        der: bytes = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return der

    def write_challenge(self, value: bytes, connection: object = None) -> None:
        """ATTESTATION_CHALLENGE: the challenge the API gave this connection's app."""
        if self.status.status is Status.PROVISIONED:
            raise ProtocolError(Status.ERR_STATE, "already provisioned")
        if self.attestation_key is None:
            raise ProtocolError(Status.ERR_STATE, "this device has no attestation key")
        if len(value) != protocol.CHALLENGE_LEN:
            raise ProtocolError(Status.ERR_LENGTH, f"a challenge is {protocol.CHALLENGE_LEN} bytes")
        self._challenges[connection] = bytes(value)

    def attestation(self, connection: object = None) -> bytes:
        """DEVICE_ATTESTATION: the factory key's signature over the DSN, the challenge this
        connection wrote and the certified key; empty until it wrote one (there is nothing to
        sign: a signature without the challenge would be anyone's to replay)."""
        challenge = self._challenges.get(connection)
        if self.attestation_key is None or challenge is None:
            return b""
        return attestation.sign(self.attestation_key, self.dsn, challenge, self.certified_key_der)

    def device_info(self) -> bytes:
        """DEVICE_INFO, version 1 (what a version-1 app reads)."""
        return protocol.DeviceInfo(dsn=self.dsn, public_key=self.public_key).encode()

    def device_info_v2(self) -> bytes:
        """DEVICE_INFO_V2: version 1's fields and the schemes this device accepts; in CSR mode
        key type CSR and the CSR's SHA-256 in the key's place."""
        if self.csr_mode:
            digest = hashlib.sha256(self.csr_der).digest()
            info = protocol.DeviceInfo(
                self.dsn, digest, schemes=self.accepted_schemes, key_type=protocol.KEY_TYPE_CSR
            )
        else:
            info = protocol.DeviceInfo(self.dsn, self.public_key, schemes=self.accepted_schemes)
        return info.encode()

    def _set(self, status: Status, detail: str = "") -> None:
        received = self._transfer.received if self._transfer else 0
        # A refusal can quote what the relay sent (a certificate's subject): printable only.
        detail = protocol.printable(detail, protocol.DETAIL_MAX_LEN)
        self.status = StatusReport(status, received, detail)
        logger.info("status %s %s", status.name, detail)
        self.on_status(self.status)

    def _fail(self, error: ProtocolError) -> ProtocolError:
        """End the session with an error: the transfer dropped, the owner cleared."""
        self._transfer = None
        self.owner = None
        self._set(error.status, str(error))
        return error

    def expire_idle(self) -> bool:
        """Drop a session whose owner went quiet or took too long; True if one was dropped."""
        if self.owner is None or self.status.status is Status.PROVISIONED:
            return False
        now = self._clock()
        idle, age = now - self._last_write, now - self._began
        if idle < self.lease and age < self.max_session:
            return False
        logger.warning("dropping the session: %.0f s idle, %.0f s since BEGIN", idle, age)
        self._reset()
        return True

    def _check_owner(self, connection: object) -> None:
        if self.status.status is Status.PROVISIONED:
            raise ProtocolError(Status.ERR_STATE, "already provisioned")
        self.expire_idle()
        if self.owner is not None and connection is not self.owner:
            raise ProtocolError(Status.ERR_BUSY, "another app is provisioning this device")
        if self.owner is not None:
            self._last_write = self._clock()

    def write_control(self, value: bytes, connection: object = None) -> None:
        try:
            self._check_owner(connection)
            command = protocol.decode_control(value)
        except ProtocolError as exc:
            if exc.status in (Status.ERR_BUSY, Status.ERR_STATE):
                raise  # do not disturb the session in progress
            raise self._fail(exc) from None
        if isinstance(command, protocol.Begin):
            if self.owner is None:  # a new session; the owner's BEGIN again keeps its age
                self._began = self._clock()
            self.owner = connection
            self._last_write = self._clock()
            self._transfer = protocol.Reassembler(command)
            self._set(Status.RECEIVING)
        elif isinstance(command, protocol.Abort):
            self._reset()
        elif isinstance(command, protocol.AppError):
            # From the owner (it ends the session) or, with no session, from any app (the API
            # refused before any BEGIN). Its words are the app's: printable ASCII only, bounded.
            code = protocol.printable(command.code, 64)
            logger.warning(
                "app reports API error %d %s: %s",
                command.http_status,
                code,
                protocol.printable(command.message, protocol.DETAIL_MAX_LEN),
            )
            self._transfer = None
            self.owner = None
            self._set(Status.ERR_APP, f"{command.http_status} {code}")
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
            if self._csr_key is not None:
                answer = credentials.verify_csr_answer(
                    payload,
                    self._csr_key,
                    self.dsn,
                    self.cas,
                    thing_prefix=self.thing_prefix,
                    iot_endpoint=self.iot_endpoint,
                )
            else:
                answer = credentials.verify_answer(
                    payload,
                    self._private_key,
                    self.dsn,
                    self.cas,
                    thing_prefix=self.thing_prefix,
                    minimum_scheme=self.minimum_scheme,
                    iot_endpoint=self.iot_endpoint,
                )
            try:
                self.credentials = credentials.store(self.state_dir, answer)
            except OSError as exc:
                raise ProtocolError(Status.ERR_STORAGE, "cannot store credentials") from exc
        except ProtocolError as exc:
            self._fail(exc)
            return
        except Exception as exc:  # hostile input the checks did not foresee: refuse, never hang
            logger.warning("answer refused: %s", type(exc).__name__)
            self._fail(ProtocolError(Status.ERR_FORMAT, "the answer could not be checked"))
            return
        self._transfer = None
        self._set(Status.PROVISIONED, self.credentials.thing_name)

    def _reset(self) -> None:
        self._transfer = None
        self.owner = None
        self._set(Status.IDLE)

    def disconnected(self, connection: object) -> None:
        """A dropped link ends the session: the app reconnects and starts again with BEGIN."""
        self._challenges.pop(connection, None)
        if connection is self.owner and self.status.status is not Status.PROVISIONED:
            self._reset()


# --- server --------------------------------------------------------------------------------


class OnboardingService(gatt.TemplateService):
    """The GATT server for one session. ``provisioned`` resolves with the stored credentials;
    every status change is notified to subscribers and passed on to ``on_status``."""

    UUID = UUID(protocol.SERVICE_UUID)

    def __init__(
        self,
        device: Any,
        session: ProvisioningSession,
        on_status: Callable[[StatusReport], None] = lambda _report: None,
    ) -> None:
        self.device = device
        self.session = session
        self.provisioned: asyncio.Future[Credentials] = asyncio.get_running_loop().create_future()
        self._on_status = on_status
        self._tasks: set[asyncio.Task[None]] = set()
        # The lease also runs out with nobody writing: STATUS then says IDLE again.
        lease_task = asyncio.create_task(self._expire_idle_sessions())
        self.provisioned.add_done_callback(lambda _future: lease_task.cancel())
        readable = gatt.Characteristic.READABLE
        writable = gatt.Characteristic.WRITEABLE
        read = gatt.Characteristic.Properties.READ
        write = gatt.Characteristic.Properties.WRITE
        self.status_characteristic: gatt.Characteristic[bytes] = gatt.Characteristic(
            protocol.STATUS_UUID,
            read | gatt.Characteristic.Properties.NOTIFY,
            readable,
            gatt.CharacteristicValue(read=lambda _connection: session.status.encode()),
        )
        session.on_status = self._status_changed
        # CSR mode: no version-1 DEVICE_INFO (a version-1 app stops before spending a
        # certificate on an answer the device would refuse), and the CSR to read.
        by_version: list[gatt.Characteristic[bytes]] = [
            gatt.Characteristic(
                protocol.DEVICE_CSR_UUID,
                read,
                readable,
                gatt.CharacteristicValue(read=lambda _connection: session.csr_der),
            )
            if session.csr_mode
            else gatt.Characteristic(
                protocol.DEVICE_INFO_UUID,
                read,
                readable,
                gatt.CharacteristicValue(read=lambda _connection: session.device_info()),
            )
        ]
        # Additive: only a device with a factory key has them; older apps never look for them.
        # The app writes the API's challenge, then reads the signature over it.
        if session.attestation_key is not None:
            by_version += [
                gatt.Characteristic(
                    protocol.ATTESTATION_CHALLENGE_UUID,
                    write,
                    writable,
                    gatt.CharacteristicValue(write=self._guarded(session.write_challenge)),
                ),
                gatt.Characteristic(
                    protocol.DEVICE_ATTESTATION_UUID,
                    read,
                    readable,
                    gatt.CharacteristicValue(read=session.attestation),
                ),
            ]
        super().__init__(
            [
                *by_version,
                gatt.Characteristic(
                    protocol.DEVICE_INFO_V2_UUID,
                    read,
                    readable,
                    gatt.CharacteristicValue(read=lambda _connection: session.device_info_v2()),
                ),
                gatt.Characteristic(
                    protocol.CONTROL_UUID,
                    write,
                    writable,
                    gatt.CharacteristicValue(write=self._guarded(session.write_control)),
                ),
                gatt.Characteristic(
                    protocol.DATA_UUID,
                    write,
                    writable,
                    gatt.CharacteristicValue(write=self._guarded(session.write_data)),
                ),
                self.status_characteristic,
            ]
        )

    def _guarded(self, handler: Callable[[bytes, object], None]) -> Callable[[Any, bytes], None]:
        """A write handler: protocol errors become ATT errors carrying the status code."""

        def write(connection: Any, value: bytes) -> None:
            try:
                handler(bytes(value), connection)
            except ProtocolError as exc:
                raise ATT_Error(int(exc.status)) from None
            if self.session.credentials is not None and not self.provisioned.done():
                self.provisioned.set_result(self.session.credentials)

        return write

    async def _expire_idle_sessions(self) -> None:
        while True:
            await asyncio.sleep(max(self.session.lease / 4, 0.05))
            self.session.expire_idle()

    def _status_changed(self, report: StatusReport) -> None:
        notify = self.device.notify_subscribers(self.status_characteristic, report.encode())
        task = asyncio.create_task(notify)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._on_status(report)

    def on_connection(self, connection: Any) -> None:
        """Call for every new connection: its disconnection ends a session it owns."""
        connection.on(
            connection.EVENT_DISCONNECTION,
            lambda _reason: self.session.disconnected(connection),
        )


def advertising_data(dsn: str) -> tuple[bytes, bytes]:
    """(advertising data, scan response) announcing the service and the DSN."""
    name, complete = protocol.advertised_name(dsn)
    name_type = data_types.CompleteLocalName if complete else data_types.ShortenedLocalName
    advertisement = AdvertisingData(
        [
            data_types.Flags(
                AdvertisingData.Flags.LE_GENERAL_DISCOVERABLE_MODE
                | AdvertisingData.Flags.BR_EDR_NOT_SUPPORTED
            ),
            data_types.ServiceData128BitUUID(
                UUID(protocol.SERVICE_UUID), protocol.encode_service_data(dsn)
            ),
        ]
    )
    return bytes(advertisement), bytes(AdvertisingData([name_type(name)]))


# --- client --------------------------------------------------------------------------------


class MissingService(Exception):
    """The peer does not offer the onboarding service (or lacks one of its characteristics)."""


class OnboardingServiceProxy(gatt_client.ProfileServiceProxy):
    """The app's side: a connection to one device's onboarding service."""

    SERVICE_CLASS = OnboardingService

    def __init__(self, service_proxy: gatt_client.ServiceProxy) -> None:
        self.service_proxy = service_proxy
        try:
            self.control_characteristic = service_proxy.get_required_characteristic_by_uuid(
                UUID(protocol.CONTROL_UUID)
            )
            self.data_characteristic = service_proxy.get_required_characteristic_by_uuid(
                UUID(protocol.DATA_UUID)
            )
            self.status_characteristic = service_proxy.get_required_characteristic_by_uuid(
                UUID(protocol.STATUS_UUID)
            )
        except Exception as exc:
            raise MissingService(f"onboarding service incomplete: {exc}") from exc

        # Version 2 devices also offer DEVICE_INFO_V2 (the schemes they accept); a device in
        # CSR mode offers only it (and DEVICE_CSR).
        def optional(uuid: str) -> Any:
            return next(iter(service_proxy.get_characteristics_by_uuid(UUID(uuid))), None)

        self.device_info_characteristic = optional(protocol.DEVICE_INFO_UUID)
        self.device_info_v2_characteristic = optional(protocol.DEVICE_INFO_V2_UUID)
        self.device_csr_characteristic = optional(protocol.DEVICE_CSR_UUID)
        self.device_attestation_characteristic = optional(protocol.DEVICE_ATTESTATION_UUID)
        self.attestation_challenge_characteristic = optional(protocol.ATTESTATION_CHALLENGE_UUID)
        if self.device_info_characteristic is None and self.device_info_v2_characteristic is None:
            raise MissingService("onboarding service incomplete: no DEVICE_INFO")
        self.connection: Any = service_proxy.client.connection
        self.mtu = protocol.DEFAULT_MTU
        self.statuses: asyncio.Queue[StatusReport] = asyncio.Queue()
        self.closed = False

    @classmethod
    async def connect(cls, device: Any, address: str) -> OnboardingServiceProxy:
        """Connect, ask for the largest MTU, discover the service, subscribe to STATUS."""
        from bumble.device import Peer

        connection = await device.connect(address, timeout=10)
        peer = Peer(connection)
        mtu = await peer.request_mtu(protocol.PREFERRED_MTU)
        proxy = await peer.discover_service_and_create_proxy(cls)
        if proxy is None:
            raise MissingService(f"{address} has no onboarding service")
        proxy.mtu = mtu
        await peer.subscribe(proxy.status_characteristic, proxy._on_status)
        return proxy

    def _on_status(self, value: bytes) -> None:
        try:
            self.statuses.put_nowait(StatusReport.decode(bytes(value)))
        except ProtocolError:
            logger.warning("undecodable status notification")

    async def device_info(self) -> DeviceInfo:
        """DEVICE_INFO_V2 when the device has it (``schemes`` set), else DEVICE_INFO."""
        characteristic = self.device_info_v2_characteristic or self.device_info_characteristic
        return DeviceInfo.decode(bytes(await characteristic.read_value()))

    async def device_csr(self, info: DeviceInfo) -> bytes:
        """A CSR-mode device's CSR (DER), checked against the digest DEVICE_INFO_V2 gave."""
        if self.device_csr_characteristic is None:
            raise ProtocolError(Status.ERR_FORMAT, "CSR mode but no DEVICE_CSR")
        der = bytes(await self.device_csr_characteristic.read_value())
        if len(der) > protocol.CSR_MAX_LEN or hashlib.sha256(der).digest() != info.public_key:
            raise ProtocolError(Status.ERR_FORMAT, "DEVICE_CSR does not match DEVICE_INFO_V2")
        return der

    @property
    def attests(self) -> bool:
        """Whether the device has a factory key: it takes a challenge and signs over it."""
        return (
            self.device_attestation_characteristic is not None
            and self.attestation_challenge_characteristic is not None
        )

    async def attestation(self, challenge: bytes) -> bytes | None:
        """Write the API's challenge, then read the device's attestation over it (a DER
        signature); None when the device attests nothing. The app relays it as is: only the
        service can check it (against the allowlisted key)."""
        if not self.attests:
            return None
        await self.attestation_challenge_characteristic.write_value(challenge, with_response=True)
        value = bytes(await self.device_attestation_characteristic.read_value())
        if not 8 <= len(value) <= protocol.ATTESTATION_MAX_LEN:
            raise ProtocolError(Status.ERR_FORMAT, "DEVICE_ATTESTATION is not a signature")
        return value

    async def status(self) -> StatusReport:
        return StatusReport.decode(bytes(await self.status_characteristic.read_value()))

    async def control(self, value: bytes) -> None:
        await self.control_characteristic.write_value(value, with_response=True)

    async def send(self, payload: bytes, drop_after: int | None = None) -> None:
        """BEGIN, the DATA chunks, COMMIT (write with response: the device paces us).

        ``drop_after``: cut the link after that many chunks (to test the app's recovery).
        """
        await self.control(protocol.encode_begin(payload))
        for index, chunk in enumerate(protocol.split_chunks(payload, self.mtu)):
            if drop_after is not None and index == drop_after:
                await self.close()
                raise ConnectionError(f"link dropped after {index} chunks (test hook)")
            await self.data_characteristic.write_value(chunk, with_response=True)
        await self.control(protocol.encode_commit())

    async def final_status(self, timeout: float) -> StatusReport:
        """The first PROVISIONED or error the device reports (notified, or read at timeout)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    report = await self.statuses.get()
                    if report.status.is_final:
                        return report
        except TimeoutError:
            return await self.status()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await asyncio.wait_for(self.connection.disconnect(), timeout=5)
        except Exception:
            logger.debug("disconnect failed", exc_info=True)
