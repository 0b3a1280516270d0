"""The example processes' event lines: what device.py, provisioning_app.py and the radio tell
whoever started them (the demos, the tests, a user at a terminal), one line each on stdout.

    ADVERTISING dsn=SN-0001 address=F0:F1:F2:F3:F4:F5/P
    PROVISIONED thing=device_SN-0001 cert=3f6c...

``emit(event)`` writes one; ``parse(line)`` reads one back, or None for any other line (log
output shares the stream). A line is the event's NAME, then its fields as ``key=value`` in
the order they are declared; only the last field of an event may hold spaces.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TextIO, TypeVar


class Event:
    """Base of every event line; NAME is the line's first word."""

    NAME: ClassVar[str]
    _BY_NAME: ClassVar[dict[str, type[Event]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Event._BY_NAME[cls.NAME] = cls


E = TypeVar("E", bound=Event)


# --- the device (device.py) ----------------------------------------------------------------


@dataclass(frozen=True)
class Advertising(Event):
    """Unprovisioned, advertising the onboarding service."""

    NAME = "ADVERTISING"
    dsn: str
    address: str  # as bumble prints it, e.g. F0:F1:F2:F3:F4:F5/P

    @property
    def bare_address(self) -> str:
        """The address without bumble's type suffix, as --address takes it."""
        return self.address.split("/")[0]


@dataclass(frozen=True)
class StatusChanged(Event):
    """The device's provisioning status (docs/ble-protocol.md), as the device sets it or as
    the app read it at the end of a transfer."""

    NAME = "DEVICE_STATUS"
    status: str  # a protocol.Status name
    detail: str = ""


@dataclass(frozen=True)
class Provisioned(Event):
    """The device stored its credentials (device: with its certificate id), or the app saw it
    do so (app: thing only)."""

    NAME = "PROVISIONED"
    thing: str
    cert: str = ""


@dataclass(frozen=True)
class HasCredentials(Event):
    """The device booted with valid stored credentials: no BLE."""

    NAME = "CREDENTIALS"
    thing: str
    cert: str


@dataclass(frozen=True)
class CredentialsExpired(Event):
    """The stored certificate has run out (found at boot, or when the broker refused it): the
    device advertises the onboarding service again, keeping its state, for its owner to
    onboard it through the app as the same thing (a recovery)."""

    NAME = "CREDENTIALS_EXPIRED"
    thing: str
    cert: str
    not_after: str


@dataclass(frozen=True)
class HelloPublished(Event):
    NAME = "HELLO_PUBLISHED"
    topic: str


@dataclass(frozen=True)
class MqttFailed(Event):
    """The MQTT connection or publish failed (a revoked device is refused by the broker)."""

    NAME = "MQTT_FAILED"
    error: str  # the exception's type name


@dataclass(frozen=True)
class RenewalRequested(Event):
    """The device published a CSR on things/<thing>/certificate/renew (its new key kept in
    memory only until the answer is stored)."""

    NAME = "RENEWAL_REQUESTED"
    thing: str
    cert: str  # the current certificate's id
    reason: str  # SCHEDULED | DUE (the cloud's renew/due)


@dataclass(frozen=True)
class Renewed(Event):
    """The device connected with its new certificate, confirmed it, and dropped the old one."""

    NAME = "RENEWED"
    thing: str
    old: str
    cert: str
    not_after: str


@dataclass(frozen=True)
class RenewalFailed(Event):
    """A renewal did not complete: the old credentials stay; retried after ``retry_in`` s."""

    NAME = "RENEWAL_FAILED"
    thing: str
    retry_in: float
    reason: str  # a rejected code, TIMEOUT, a trust refusal, CONNECT


# --- the phone app (provisioning_app.py) ---------------------------------------------------


@dataclass(frozen=True)
class SignedIn(Event):
    NAME = "SIGNED_IN"
    user: str


@dataclass(frozen=True)
class Found(Event):
    """The one device the app will provision (DSN or its advertised prefix)."""

    NAME = "FOUND"
    address: str
    dsn: str


@dataclass(frozen=True)
class Ambiguous(Event):
    """Several devices fit; the app refuses to guess."""

    NAME = "AMBIGUOUS"
    count: int
    devices: str  # "ADDRESS (DSN), ..."


@dataclass(frozen=True)
class DeviceRead(Event):
    """Connected: the DSN and key read over GATT, at this ATT MTU."""

    NAME = "DEVICE"
    dsn: str
    mtu: int


@dataclass(frozen=True)
class ApiAnswered(Event):
    """POST /certificate answered 200 (the answer itself is never printed)."""

    NAME = "API_OK"
    thing: str


@dataclass(frozen=True)
class ApiRefused(Event):
    NAME = "API_ERROR"
    status: int
    code: str
    msg: str


@dataclass(frozen=True)
class RateLimited(Event):
    """A 429: the app waits ``wait`` seconds, then makes retry number ``retry`` of ``retries``."""

    NAME = "RATE_LIMITED"
    retry_after: str  # the header as sent, "-" when absent
    wait: float
    retry: int
    retries: int


@dataclass(frozen=True)
class RateLimitGaveUp(Event):
    NAME = "RATE_LIMIT_GAVE_UP"
    attempts: int


@dataclass(frozen=True)
class Retry(Event):
    """The link broke during a transfer; the app reconnects and sends again."""

    NAME = "RETRY"
    attempt: int
    reason: str


# --- the virtual radio (onboarding_ble.radio) ----------------------------------------------


@dataclass(frozen=True)
class RadioReady(Event):
    """The HCI transports a host connects to, one per controller."""

    NAME = "RADIO_READY"
    transports: tuple[str, ...]


# --- writing and reading -------------------------------------------------------------------


def _fields(cls: type[Event]) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(cls)  # type: ignore[arg-type]


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_line(event: Event) -> str:
    fields = _fields(type(event))
    words = [event.NAME]
    for index, field in enumerate(fields):
        text = _text(getattr(event, field.name))
        if index < len(fields) - 1 and (" " in text or not text.isprintable()):
            raise ValueError(f"{event.NAME} {field.name} must not contain spaces: {text!r}")
        # The last field is free text: nothing in it may end the line (a reader's splitlines()
        # splits on \r, \x0b, \x1c, \u2028 and more), so every non-printable becomes "?".
        words.append(f"{field.name}={''.join(c if c.isprintable() else '?' for c in text)}")
    return " ".join(words)


def emit(event: Event, stream: TextIO | None = None) -> None:
    """Write ``event`` as one line and flush it (the reader may be waiting for it)."""
    print(format_line(event), file=stream or sys.stdout, flush=True)


_CONVERT: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "tuple[str, ...]": lambda text: tuple(text.split(",")) if text else (),
}


def parse(line: str) -> Event | None:
    """The event on ``line``, or None when it is not an event line.

    ValueError for a line that starts with an event's NAME but does not fit it.
    """
    name, _, rest = line.rstrip("\n").partition(" ")
    cls = Event._BY_NAME.get(name)
    if cls is None:
        return None
    fields = {field.name: field for field in _fields(cls)}
    values: dict[str, str] = {}
    current: str | None = None
    for word in rest.split(" ") if rest else []:
        key, sep, value = word.partition("=")
        if sep and key in fields and key not in values:
            values[key] = value
            current = key
        elif current is not None:
            values[current] += " " + word
        else:
            raise ValueError(f"not a {name} line: {line!r}")
    try:
        return cls(**{key: _CONVERT[str(fields[key].type)](value) for key, value in values.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a {name} line: {line!r} ({exc})") from None


def parse_all(lines: Iterable[str]) -> list[Event]:
    """Every event among ``lines`` (a process's output), in order."""
    return [event for line in lines if (event := parse(line)) is not None]


def first(events: Iterable[Event], kind: type[E]) -> E | None:
    """The first event of type ``kind``, if any."""
    return next((event for event in events if isinstance(event, kind)), None)
