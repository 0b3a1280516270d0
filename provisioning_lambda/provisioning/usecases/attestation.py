"""The attestation checks provisioning makes against the allowlist (the rules themselves are
domain/attestation.py's)."""

from __future__ import annotations

from dataclasses import dataclass

from provisioning.domain.attestation import (
    AllowlistEntry,
    AttestedKey,
    certified_key_id,
    check,
    refuse_if_blocked,
)
from provisioning.ports import Services
from provisioning.usecases.challenge import consume


@dataclass(frozen=True)
class AllowlistRead:
    """What the allowlist says of a provisioning request: its entry, and, when an attestation
    may vouch for the key, the key's ``certified_key_id`` and whether it was certified before."""

    entry: AllowlistEntry | None
    key_id: str = ""
    certified: bool = False


def read_allowlist(services: Services, request: AttestedKey) -> AllowlistRead:
    """The reads only (no decision, nothing written): provisioning runs them beside its claim."""
    allowlist = services.allowlist
    if allowlist is None:
        return AllowlistRead(None)
    entry = allowlist.get(request.dsn)
    attested = (
        request.signature is not None
        and entry is not None
        and not entry.blocked
        and bool(entry.public_key_der)
    )
    if not attested:
        return AllowlistRead(entry)
    key_id = certified_key_id(request.public_key_der)
    return AllowlistRead(entry, key_id, allowlist.is_certified(request.dsn, key_id))


def judge(services: Services, request: AttestedKey, read: AllowlistRead) -> None:
    """Raise the refusal (domain/attestation.py's ``check``) for what the allowlist says."""
    check(
        required=services.settings.require_attestation,
        entry=read.entry,
        dsn=request.dsn,
        public_key_der=request.public_key_der,
        signature=request.signature,
        challenge=request.challenge,
        certified=read.certified,
    )


def authorise_device(
    services: Services,
    caller_sub: str,
    request: AttestedKey,
    request_id: str,
    read: AllowlistRead | None = None,
) -> str:
    """The check POST /certificate makes (``check``, then the challenge consumed when the
    attestation verified), from ``read`` when the reads were made already.

    ``request.public_key_der``: SPKI DER of the key to be certified. publicKey mode passes
    ``x25519_spki_der(request.device_public_key)``; CSR mode passes ``csr_spki_der`` of the
    request's CSR. Returns the key's ``certified_key_id`` when an attestation vouched for it
    (the commit records it), else "".
    """
    read = read if read is not None else read_allowlist(services, request)
    judge(services, request, read)
    if read.key_id:
        consume(services, caller_sub, request.dsn, request.challenge, request_id)
    return read.key_id


def refuse_blocked(services: Services, dsn: str) -> None:
    """Refuse (DEVICE_BLOCKED) a DSN the allowlist blocks (domain/attestation.py's one rule)."""
    if services.allowlist is not None:
        refuse_if_blocked(services.allowlist.get(dsn))
