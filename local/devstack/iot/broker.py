"""The offline stack's MQTT broker (amqtt): it stands in for AWS IoT Core's data plane.

``start_stack`` (so ``devstack up``, ``demo`` and the end-to-end tests) runs it in a thread of
its own next to the rest of the stack, and the state file says where it listens:
``"mqtt": {"host", "port", "ca_file", "log_file", "messages_file"}``.

TLS with a server certificate from a local broker CA (``ca_file``: what a client trusts, in
the place of Amazon Root CA 1), and a required client certificate chained to the Private CA
(read from ACM PCA in the emulator). Like IoT Core, a client is admitted only while the IoT
registry has its certificate ACTIVE and attached to the thing whose name is the MQTT client
id; a connected client is disconnected within seconds once its certificate leaves ACTIVE; a
client may only publish, subscribe and receive on its own topics (things/<client id>/...,
$aws/things/<client id>/shadow|jobs/...), like the device policy.

Like IoT Core, it runs the template's topic rules on what devices publish (``TopicRulesPlugin``,
devstack.iot.topic_rules), and AWS IoT's own publishes (the iot-data endpoint,
devstack.iot.iot_data) come in through ``BrokerThread.publish``, past the device policy; the
endpoint's DeleteConnection disconnects a client at once through ``BrokerThread.disconnect``.

Its decisions are lines in ``log_file`` (``ADMIT``, ``REFUSE``, ``DISCONNECT``, ``DENY``,
``RULE``, ``PUBLISH``),
naming a certificate by the id the API returns; every message it delivered is appended to
``messages_file`` (JSON lines: ``client_id``, ``topic``, ``payload``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.iot.topic_rules import RuleEngine

# The broker's decisions, one line each; the stack sends them to the broker's log file.
logger = logging.getLogger("devstack.iot.broker")


# --- Registry check ------------------------------------------------------------------------


# The offline stack never uses real credentials, not even against 127.0.0.1.
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# How often connected clients are checked against the registry (IoT Core: within minutes).
WATCH_INTERVAL = 1.0
CHECK_TIMEOUT = 10.0  # seconds one registry check of one client may take
STOP_TIMEOUT = 5.0  # seconds one connection may take to close before it is aborted


def iot_client(endpoint_url: str | None, region: str) -> Any:
    import boto3

    return boto3.client("iot", region_name=region, endpoint_url=endpoint_url, **FAKE_CREDENTIALS)


def admit(iot: Any, client_id: str, peer_der: bytes) -> tuple[bool, str]:
    """IoT Core's rule: the certificate is ACTIVE and attached to the thing named client_id.

    As in IoT Core, the certificate's status is checked first, wherever it is attached: a
    revoked certificate is refused as REVOKED (revoking also detaches it, and "not attached"
    would hide why). Then it must be attached to the thing. The reason names the id the
    registry (and so the API's ``certificateId``) uses; a certificate the registry does not
    hold is named by the SHA-256 of its DER, as IoT Core would.
    """
    der_id = hashlib.sha256(peer_der).hexdigest()
    if not client_id:
        return False, f"certificate {der_id}: empty client id"
    try:
        principals = iot.list_thing_principals(thingName=client_id)["principals"]
    except iot.exceptions.ResourceNotFoundException:
        principals = None
    registered = _registered(iot, peer_der, principals or [])
    if registered is None:
        return False, f"certificate {der_id} is not registered in AWS IoT"
    cert_id, status = registered["certificateId"], registered["status"]
    if status != "ACTIVE":
        return False, f"certificate {cert_id} of {client_id!r} is {status}"
    if principals is None:
        return False, f"certificate {cert_id}: no thing named {client_id!r}"
    if registered["certificateArn"] not in principals:
        return False, f"certificate {cert_id} is not attached to thing {client_id!r}"
    return True, f"certificate {cert_id} ACTIVE for {client_id!r}"


def _registered(iot: Any, peer_der: bytes, principals: list[str]) -> dict[str, Any] | None:
    """The registry's description of the certificate ``peer_der``, or None if it holds none.

    IoT's certificate id is the SHA-256 of the DER certificate; moto's, unless
    MOTO_IOT_USE_VALID_CERT is set, is the SHA-256 of the PEM text it was given (ACM PCA's
    PEM of the DER, as the stack's functions pass it on). The certificates among the thing's
    ``principals`` are tried first (the usual case, one call), then both ids; whatever is
    found is compared by DER.
    """
    pem = x509.load_der_x509_certificate(peer_der).public_bytes(serialization.Encoding.PEM)
    candidates = [arn.rsplit("/", 1)[-1] for arn in principals if ":cert/" in arn]
    candidates += [hashlib.sha256(peer_der).hexdigest(), hashlib.sha256(pem).hexdigest()]
    for cert_id in dict.fromkeys(candidates):
        try:
            described = iot.describe_certificate(certificateId=cert_id)
        except iot.exceptions.ResourceNotFoundException:
            continue
        description: dict[str, Any] = described["certificateDescription"]
        stored = x509.load_pem_x509_certificate(description["certificatePem"].encode())
        if stored.public_bytes(serialization.Encoding.DER) == peer_der:
            return description
    return None


# --- amqtt plugins -------------------------------------------------------------------------

try:
    from amqtt.broker import Broker
    from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin
    from amqtt.session import Session
except ImportError:  # pragma: no cover - amqtt is a dev/offline dependency only
    Broker = BaseAuthPlugin = BasePlugin = BaseTopicPlugin = object  # type: ignore[misc,assignment]


class IotRegistryAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """Admit a TLS client only if the IoT registry says so (see `admit`)."""

    @dataclass
    class Config:
        endpoint_url: str = ""
        region: str = "us-east-1"

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._iot = iot_client(self.config.endpoint_url or None, self.config.region)

    async def authenticate(self, *, session: Session) -> bool:
        try:
            der = session.ssl_object.getpeercert(binary_form=True) if session.ssl_object else None
        except ValueError:  # a TLS connection already closed ("handshake not done yet")
            der = None
        if not der:
            logger.warning("refused %r: no client certificate", session.client_id)
            return False
        try:
            ok, why = await asyncio.to_thread(admit, self._iot, session.client_id or "", der)
        except Exception as exc:
            ok, why = False, f"registry check failed: {type(exc).__name__}"
        logger.info("%s client=%s %s", "ADMIT" if ok else "REFUSE", session.client_id, why)
        return ok


def policy_allows(thing: str, topic: str) -> bool:
    """The shared device policy in template.yaml, for a client whose thing name is `thing`.

    Publish, receive and subscribe only on things/<thing>/*, $aws/things/<thing>/shadow/*
    and $aws/things/<thing>/jobs/*. As in IoT, a topic filter is matched as a literal string,
    so things/+/hello or things/# never fit another thing's prefix. (amqtt itself refuses
    publishes to $-topics, so only subscribing there works offline.)
    """
    if not thing or any(char in thing for char in "/+#"):
        return False
    prefixes = (f"things/{thing}/", f"$aws/things/{thing}/shadow/", f"$aws/things/{thing}/jobs/")
    return topic.startswith(prefixes)


class ThingTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """Like the device policy: publish, subscribe and receive only the client's own topics."""

    @dataclass
    class Config:
        pass

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Any = None
    ) -> bool:
        if session is None or topic is None:
            return False
        allowed = policy_allows(session.client_id or "", topic)
        if not allowed:
            logger.info("DENY %s client=%s topic=%s", action, session.client_id, topic)
        return allowed


class RecorderPlugin(BasePlugin):  # type: ignore[misc]
    """Append every publish the policy let through to a JSON-lines file (tests, the demo).

    amqtt fires "message received" before the topic check, "message broadcast" after it.
    """

    @dataclass
    class Config:
        path: str = ""

    async def on_broker_message_broadcast(self, *, client_id: str, message: Any) -> None:
        if not self.config.path or message is None:
            return
        record = {
            "client_id": client_id,
            "topic": message.topic,
            "payload": bytes(message.data).decode("utf-8", "replace"),
        }
        with open(self.config.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


class TopicRulesPlugin(BasePlugin):  # type: ignore[misc]
    """IoT Core's rules engine: every publish the device policy let through goes to the
    template's topic rules (devstack.iot.topic_rules), with the publisher's certificate id as
    ``principal()``. Publishes of AWS IoT itself (the iot-data endpoint) do not."""

    @dataclass
    class Config:
        pass

    async def on_broker_message_broadcast(self, *, client_id: str, message: Any) -> None:
        # amqtt hands plugins a context, not the broker; the engine hangs on our broker class
        engine = getattr(getattr(self.context, "_broker_instance", None), "rules", None)
        if engine is None or message is None:
            return
        session = self.context.get_session(client_id)
        ssl_object = session.ssl_object if session is not None else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der:
            return
        engine.on_publish(
            message.topic,
            bytes(message.data),
            principal=hashlib.sha256(der).hexdigest(),
            client_id=client_id,
        )


class MutualTlsBroker(Broker):  # type: ignore[misc]
    """amqtt asks for a client certificate but does not require one; IoT Core does.

    Like IoT Core when a certificate leaves ACTIVE (UpdateCertificate to INACTIVE or REVOKED)
    or is detached from the thing, the broker disconnects the clients connected with it: a
    watcher checks every connected session against the registry every ``watch_interval``
    seconds, for as long as the broker runs (no failure of one check or one session ends it).
    The reconnect is then refused by `IotRegistryAuthPlugin`. ``delete_connection`` is IoT's
    DeleteConnection: it disconnects a client at once, whatever the registry says.
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        iot: Any,
        watch_interval: float = WATCH_INTERVAL,
        rules: RuleEngine | None = None,
    ) -> None:
        super().__init__(config)
        self._iot = iot
        self.rules = rules  # the template's topic rules, run by TopicRulesPlugin
        self._watch_interval = watch_interval
        self._watcher: asyncio.Task[None] | None = None

    @staticmethod
    def _create_ssl_context(listener: Any) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=listener["cafile"])
        context.load_cert_chain(listener["certfile"], listener["keyfile"])
        context.verify_mode = ssl.CERT_REQUIRED
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Session]:
        """amqtt hands a reconnecting persistent session (clean session off) the TLS object of
        its previous connection, whose ``getpeercert`` then raises: give it this connection's."""
        handler, session = await super()._initialize_client_session(
            reader, writer, remote_address, remote_port
        )
        session.ssl_object = writer.get_ssl_info()
        return handler, session

    async def start(self) -> None:
        await super().start()
        self._watcher = asyncio.create_task(self._watch())

    async def shutdown(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await super().shutdown()

    async def _watch(self) -> None:
        """Check the connected clients every ``watch_interval`` seconds, for the broker's whole
        life: whatever one round raises is logged, and the next round runs."""
        while True:
            await asyncio.sleep(self._watch_interval)
            try:
                await self.disconnect_unauthorised()
            except Exception as exc:  # never the end of the watch
                logger.warning("WATCH round failed: %s", type(exc).__name__)

    async def disconnect_unauthorised(self) -> list[str]:
        """Disconnect every connected client the registry no longer admits; their client ids.

        Each session is checked and dropped on its own, each step bounded in time: a check that
        fails or hangs, or a session that will not close, costs that session, never the others.
        """
        dropped = []
        for client_id, (session, handler) in list(self._sessions.items()):
            try:
                if await self._drop_if_unauthorised(client_id, session, handler):
                    dropped.append(client_id)
            except Exception as exc:  # the next session, and the next round, still run
                logger.warning("WATCH check of %r failed: %s", client_id, type(exc).__name__)
        return dropped

    async def _drop_if_unauthorised(self, client_id: str, session: Session, handler: Any) -> bool:
        if not _is_live(session, handler):
            return False
        der = session.ssl_object.getpeercert(binary_form=True) if session.ssl_object else None
        if not der:
            return False
        try:
            ok, why = await asyncio.wait_for(
                asyncio.to_thread(admit, self._iot, client_id, der), CHECK_TIMEOUT
            )
        except Exception as exc:  # the registry is unreachable: keep the client, as IoT would
            logger.warning("registry check for %r failed: %s", client_id, type(exc).__name__)
            return False
        if ok or self._sessions.get(client_id, (None, None))[0] is not session:
            return False  # admitted, or gone (or replaced) while the registry answered
        logger.info("DISCONNECT client=%s %s", client_id, why)
        await self._close(handler)
        return True

    async def delete_connection(
        self, client_id: str, *, clean_session: bool, prevent_will: bool
    ) -> bool:
        """IoT's DeleteConnection: close ``client_id``'s connection now; False if it has none.

        ``clean_session`` also drops its session state (subscriptions, queued messages), as for
        a persistent session (a clean session has none to keep); ``prevent_will`` suppresses its
        Last Will message. Answers once the connection is closed (or, for a connection that will
        not close, aborted).
        """
        session, handler = self._sessions.get(client_id, (None, None))
        if session is None or not _is_live(session, handler):
            return False
        logger.info(
            "DISCONNECT client=%s DeleteConnection cleanSession=%s preventWillMessage=%s",
            client_id,
            str(clean_session).lower(),
            str(prevent_will).lower(),
        )
        if prevent_will:
            session.will_flag = False
        await self._close(handler)
        if clean_session and self._sessions.get(client_id, (None, None))[0] is session:
            await self._delete_session(client_id)  # amqtt's own: subscriptions and queues
        return True

    async def _close(self, handler: Any) -> None:
        """Close one connection within ``STOP_TIMEOUT`` seconds; past that (a peer that reads
        nothing, a TLS close that never completes) its transport is aborted."""
        try:
            await asyncio.wait_for(handler.stop(), STOP_TIMEOUT)
            return
        except Exception as exc:
            logger.warning(
                "closing %r failed (%s): aborted", _client_of(handler), type(exc).__name__
            )
        transport = getattr(getattr(handler.writer, "_writer", None), "transport", None)
        if transport is not None:
            transport.abort()
        # the session's message loop ends the session once the handler says it is gone
        with contextlib.suppress(Exception):
            await handler.handle_connection_closed()


def _is_live(session: Any, handler: Any) -> bool:
    """A session whose client is connected now. amqtt keeps a client refused at CONNECT in its
    session table as "connected", its connection already closed; and a session being closed
    has its writer closed first. Neither has a connection to check or to close."""
    if session.transitions.state != "connected" or handler is None:
        return False
    writer = getattr(handler, "writer", None)
    return writer is not None and not getattr(writer, "is_closed", False)


def _client_of(handler: Any) -> str:
    session = getattr(handler, "session", None)
    return str(getattr(session, "client_id", "") or "")


# --- Files ---------------------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def ensure_server_identity(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """A local broker CA and a server certificate for `host` (made once, then reused)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = (
        directory / "broker-ca.pem",
        directory / "server.pem",
        directory / "server.key",
    )
    if ca_path.exists() and cert_path.exists() and key_path.exists():
        return ca_path, cert_path, key_path
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Local MQTT broker CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write(ca_path, ca.public_bytes(serialization.Encoding.PEM))
    return ca_path, cert_path, key_path


def fetch_private_ca(endpoint_url: str | None, region: str, ca_arn: str) -> bytes:
    """The Private CA certificate (and chain, if any) from ACM PCA."""
    import boto3

    pca = boto3.client("acm-pca", region_name=region, endpoint_url=endpoint_url, **FAKE_CREDENTIALS)
    answer = pca.get_certificate_authority_certificate(CertificateAuthorityArn=ca_arn)
    pem: str = answer["Certificate"].strip() + "\n"
    if chain := answer.get("CertificateChain"):
        pem += chain.strip() + "\n"
    return pem.encode()


# --- Running it ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MqttEndpoint:
    """Where the broker listens and what a client needs to trust it (the state file's "mqtt")."""

    host: str
    port: int
    ca_file: Path
    log_file: Path
    messages_file: Path

    def state(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "ca_file": str(self.ca_file),
            "log_file": str(self.log_file),
            "messages_file": str(self.messages_file),
        }


def _free_port(host: str) -> int:
    # amqtt binds the port itself; find a free one first (0 is not reported back).
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class BrokerThread:
    """The broker on an event loop in a daemon thread; ``stop()`` shuts it down."""

    def __init__(
        self,
        *,
        directory: Path,
        log_file: Path,
        endpoint_url: str,
        region: str,
        ca_arn: str,
        host: str = "127.0.0.1",
        port: int = 0,
        rules: RuleEngine | None = None,
    ) -> None:
        self._rules = rules
        self._broker: MutualTlsBroker | None = None
        ca_file, cert_path, key_path = ensure_server_identity(directory, host)
        client_ca = directory / "client-ca.pem"
        _write(client_ca, fetch_private_ca(endpoint_url, region, ca_arn))
        messages_file = directory / "messages.jsonl"
        messages_file.unlink(missing_ok=True)
        port = port or _free_port(host)
        self.endpoint = MqttEndpoint(host, port, ca_file, log_file, messages_file)
        self._config = {
            "listeners": {
                "default": {
                    "type": "tcp",
                    "bind": f"{host}:{port}",
                    "ssl": True,
                    "cafile": str(client_ca),
                    "certfile": str(cert_path),
                    "keyfile": str(key_path),
                }
            },
            "plugins": {
                f"{__name__}.IotRegistryAuthPlugin": {
                    "endpoint_url": endpoint_url,
                    "region": region,
                },
                f"{__name__}.ThingTopicPlugin": {},
                f"{__name__}.RecorderPlugin": {"path": str(messages_file)},
                f"{__name__}.TopicRulesPlugin": {},
            },
        }
        self._iot = iot_client(endpoint_url, region)
        self._log_handler = _decision_log(log_file)
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mqtt-broker", daemon=True)

    def start(self, timeout: float = 30.0) -> MqttEndpoint:
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            raise RuntimeError(f"the MQTT broker did not start: {self._error!r}")
        return self.endpoint

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start(); the thread must not die silently
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        broker = MutualTlsBroker(self._config, iot=self._iot, rules=self._rules)
        await broker.start()
        self._broker = broker
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await broker.shutdown()

    def publish(self, topic: str, payload: bytes, qos: int, timeout: float = 5.0) -> None:
        """Publish as AWS IoT itself (the iot-data endpoint): no device policy, no rules."""
        broker = self._broker
        if broker is None or not self._thread.is_alive():
            raise RuntimeError("the MQTT broker is not running")
        asyncio.run_coroutine_threadsafe(
            broker.internal_message_broadcast(topic, payload, qos), self._loop
        ).result(timeout)
        record = {
            "client_id": "",  # AWS IoT itself, not a device
            "topic": topic,
            "payload": payload.decode("utf-8", "replace"),
        }
        with open(self.endpoint.messages_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        logger.info("PUBLISH iot-data topic=%s qos=%d bytes=%d", topic, qos, len(payload))

    def disconnect(
        self, client_id: str, clean_session: bool, prevent_will: bool, timeout: float = 15.0
    ) -> bool:
        """IoT's DeleteConnection (the iot-data endpoint): close ``client_id``'s connection now;
        False if it is not connected. See `MutualTlsBroker.delete_connection`."""
        broker = self._broker
        if broker is None or not self._thread.is_alive():
            raise RuntimeError("the MQTT broker is not running")
        closing = broker.delete_connection(
            client_id, clean_session=clean_session, prevent_will=prevent_will
        )
        return asyncio.run_coroutine_threadsafe(closing, self._loop).result(timeout)

    def stop(self) -> None:
        if self._thread.is_alive() and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(15)
        logger.removeHandler(self._log_handler)
        self._log_handler.close()


def _decision_log(path: Path) -> logging.Handler:
    """The broker's decision lines go to ``path``, not to the terminal of ``up``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler
