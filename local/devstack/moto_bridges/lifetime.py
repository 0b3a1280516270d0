"""Short-lived device certificates, on request (``devstack up --cert-lifetime 10m``).

In AWS a device certificate lives ``DeviceCertValidityDays`` days (one at least), so nothing a
person can watch expires: the device's own renewal at 60-70 % of the lifetime, the expiry
watch's ``renew/due`` and its count of expired devices all lie days away. With a lifetime set
here, the offline stack's ACM PCA issues every device certificate (an end-entity client-auth
template: what the provisioning and renewal functions ask for) valid for that long from now,
or for the ``Validity`` asked if that is shorter. CA certificates and the broker's server
certificate are not touched.

Nothing else changes: the functions send the same ``Validity`` and read the notAfter from the
certificate they get back, as in AWS, so the device rows, the expiry index, the watch and the
device all see the short lifetime; the certificates really expire, and the MQTT broker refuses
an expired one as IoT Core does. What differs from AWS (docs/offline-stack.md): the issued
validity is not the one asked, and a lifetime in minutes is shorter than any AWS allows; the
watch's warning window is still ``ExpiryWarningPercent`` of ``DeviceCertValidityDays``, so a
certificate of minutes is EXPIRING from the moment it is issued.

Why a lifetime and not a clock offset: the broker's TLS, moto and the devices would each need
the same shifted clock (OpenSSL checks a client certificate against the machine's), and a
certificate valid in one clock and expired in another would show what AWS never does.
"""

from __future__ import annotations

import contextlib
import datetime
import re
from collections.abc import Iterator

from cryptography.x509.oid import ExtendedKeyUsageOID

# The shortest and longest lifetime ``up --cert-lifetime`` takes: a minute leaves a device time
# to connect and renew; past a day it is no shorter than DeviceCertValidityDays' minimum.
SHORTEST = datetime.timedelta(minutes=1)
LONGEST = datetime.timedelta(days=1)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours"}
_DURATION = re.compile(r"([1-9][0-9]{0,5})([smh])")

_lifetime: datetime.timedelta | None = None  # None: the Validity asked, as in AWS


def parse(text: str) -> datetime.timedelta:
    """``90s``, ``10m`` or ``2h`` as a lifetime within [SHORTEST, LONGEST]; ValueError naming
    what is wrong otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 10m, 90s or 2h")
    lifetime = datetime.timedelta(**{_UNITS[match[2]]: int(match[1])})
    if not SHORTEST <= lifetime <= LONGEST:
        raise ValueError(f"{text!r} is outside 1m to 24h")
    return lifetime


def describe(lifetime: datetime.timedelta) -> str:
    """``10 min``, ``90 s``, ``2 h``: how ``up`` prints a lifetime."""
    seconds = int(lifetime.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def set_device_lifetime(lifetime: datetime.timedelta | None) -> None:
    """Issue device certificates valid for ``lifetime`` from now (None: as asked)."""
    global _lifetime
    if lifetime is not None and lifetime <= datetime.timedelta(0):
        raise ValueError("a certificate lifetime must be positive")
    _lifetime = lifetime


def device_lifetime() -> datetime.timedelta | None:
    return _lifetime


@contextlib.contextmanager
def device_lifetime_of(lifetime: datetime.timedelta) -> Iterator[None]:
    """Device certificates issued inside the block live ``lifetime``; as before after it."""
    previous = _lifetime
    set_device_lifetime(lifetime)
    try:
        yield
    finally:
        set_device_lifetime(previous)


def not_after(
    asked: datetime.datetime | None,
    now: datetime.datetime,
    extended_key_usage: object,
) -> datetime.datetime | None:
    """The notAfter to issue: ``asked`` (None: moto's default), or sooner for a device
    certificate while a lifetime is set."""
    lifetime = _lifetime
    if lifetime is None or extended_key_usage != ExtendedKeyUsageOID.CLIENT_AUTH:
        return asked
    shortened = now + lifetime
    return shortened if asked is None else min(asked, shortened)
