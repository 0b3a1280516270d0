"""Attestation challenges: issue one to a caller for a DSN, and spend it once (the rules and
their shapes are domain/challenge.py's)."""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta

from provisioning.domain.challenge import CHALLENGE_BYTES, CHALLENGE_SECONDS, Consumed
from provisioning.domain.errors import BadRequest, Forbidden
from provisioning.domain.models import User
from provisioning.ports import Services


def issue_challenge(dsn: str, caller: User, services: Services) -> dict[str, str]:
    """A new challenge for the caller and the DSN (Members and Administrators only)."""
    if not caller.may_provision:
        raise Forbidden(
            "Only members of the Members or Administrators group may manage devices.",
            "NOT_A_MEMBER",
        )
    store = services.challenges
    if store is None:
        raise BadRequest("This service does not check attestations.", "ATTESTATION_NOT_CONFIGURED")
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    now = services.clock()
    expires = now + timedelta(seconds=CHALLENGE_SECONDS)
    store.put_challenge(
        dsn, challenge, caller.sub, int(expires.timestamp()), now.isoformat(timespec="seconds")
    )
    return {
        "DSN": dsn,
        "challenge": base64.b64encode(challenge).decode("ascii"),
        "expiresAt": expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def consume(
    services: Services, caller_sub: str, dsn: str, challenge: bytes, request_id: str
) -> None:
    """Spend the challenge for this caller and DSN, or raise Forbidden with a stable code."""
    if not challenge:
        raise BadRequest(
            "An attestation needs the attestationChallenge it signs.", "CHALLENGE_MISSING"
        )
    store = services.challenges
    if store is None:
        raise Forbidden("This challenge was not issued here.", "CHALLENGE_INVALID")
    now = services.clock()
    outcome = store.consume_challenge(
        dsn,
        challenge,
        caller_sub,
        int(now.timestamp()),
        now.isoformat(timespec="seconds"),
        request_id,
    )
    if outcome is Consumed.OK:
        return
    if outcome is Consumed.USED:
        raise Forbidden("This challenge was used before; ask for a new one.", "CHALLENGE_USED")
    if outcome is Consumed.EXPIRED:
        raise Forbidden("This challenge has expired; ask for a new one.", "CHALLENGE_EXPIRED")
    # Another caller's challenge answers as one never issued: whose it is stays unsaid.
    raise Forbidden(
        "This challenge was not issued to you for this device; ask for a new one.",
        "CHALLENGE_INVALID",
    )
