"""Attestation challenges: what binds a device's attestation to the caller who relays it.

The BLE link between the app and the device is unpaired, so whatever a device serves over the
air can be read by anyone in range. An attestation over the DSN and the key alone could then be
replayed first from another account, which would own the device. So the app first asks the
service for a challenge (``POST /certificate/challenge`` with the DSN): 32 random bytes, issued
to the caller's ``sub`` for that DSN, valid for ``CHALLENGE_SECONDS``. The app writes it to the
device, the device signs it with the DSN and the key to certify (attestation.message), and the
app sends it back as ``attestationChallenge`` with the ``attestation``.

Provisioning consumes the challenge once the attestation verified, with one conditional write
(ports.ChallengePort.consume): it succeeds only for the caller it was issued to, for its DSN,
before it expires and if no request used it before. Two requests racing with one challenge
cannot both pass: one write wins, the other is refused. The challenge is spent by the first
request that presents it, whatever that request's outcome: a retry asks for a new challenge and
a new signature (the app does, example/provisioning_app.py). Nothing is secret in a challenge:
what makes it safe is that it is the caller's, once.

Refusals (403, before the device's lease is taken, so nothing is created):
``CHALLENGE_INVALID`` (never issued, another caller's, another DSN's), ``CHALLENGE_USED``,
``CHALLENGE_EXPIRED``. A challenge that is not base64 of 32 bytes is a 400
(``CHALLENGE_MALFORMED``).
"""

from __future__ import annotations

import base64
import binascii
import enum

from provisioning.domain.errors import BadRequest

CHALLENGE_BYTES = 32
CHALLENGE_TEXT = 44  # standard base64 of 32 bytes, with its one "="
CHALLENGE_SECONDS = 300  # minutes: the app asks the device and the API at once


class Consumed(enum.Enum):
    """What a consuming write found (the adapter reads it from the item the condition saw)."""

    OK = "ok"
    UNKNOWN = "unknown"  # no such challenge for this DSN (never issued, or gone by TTL)
    NOT_YOURS = "not_yours"  # issued to another caller
    USED = "used"  # an earlier request consumed it
    EXPIRED = "expired"


def parse_challenge(text: str) -> bytes:
    """The request's ``attestationChallenge``: standard base64 of 32 bytes (shape only)."""
    try:
        raw = base64.b64decode(text, validate=True) if len(text) == CHALLENGE_TEXT else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != CHALLENGE_BYTES:
        raise BadRequest(
            "attestationChallenge must be the base64 of the 32-byte challenge the API gave.",
            "CHALLENGE_MALFORMED",
        )
    return raw
