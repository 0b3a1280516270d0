"""The example device's factory attestation key and what it serves over GATT."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from onboarding_ble import attestation as device_attestation
from onboarding_ble import protocol
from onboarding_ble.gatt import ProvisioningSession
from provisioning.domain import attestation
from provisioning.domain.attestation import AllowlistEntry, check
from provisioning.domain.errors import Forbidden

DSN = "SN-ATTEST-1"


def test_the_key_is_made_once_private_and_its_public_half_is_exported(tmp_path: Path) -> None:
    key = device_attestation.load_or_create(tmp_path)
    private = tmp_path / device_attestation.KEY_FILE
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / device_attestation.PUBLIC_FILE).stat().st_mode) == 0o600
    assert isinstance(key.curve, ec.SECP256R1)
    # the next boot finds the same key
    again = device_attestation.load_or_create(tmp_path)
    assert again.private_numbers() == key.private_numbers()
    public = (tmp_path / device_attestation.PUBLIC_FILE).read_text()
    assert public == device_attestation.public_pem(key)
    # ... which the operator's allowlist takes as is
    assert attestation.load_attestation_public_key(public)


def test_a_key_file_that_is_not_p256_is_refused(tmp_path: Path) -> None:
    (tmp_path / device_attestation.KEY_FILE).write_text("not a key")
    with pytest.raises(device_attestation.AttestationKeyError):
        device_attestation.load_or_create(tmp_path)


CHALLENGE = bytes(range(0x40, 0x60))


@pytest.mark.parametrize("csr_mode", [False, True], ids=["publicKey", "csr"])
def test_the_session_attests_the_key_it_asks_to_have_certified_over_the_apps_challenge(
    tmp_path: Path, csr_mode: bool
) -> None:
    key = device_attestation.load_or_create(tmp_path)
    session = ProvisioningSession(DSN, [], tmp_path, csr_mode=csr_mode, attestation_key=key)
    # GIVEN nothing written yet: there is nothing to sign (a bare signature is anyone's)
    assert session.attestation("phone") == b""
    # WHEN the app writes the API's challenge, THEN it reads a signature over it
    session.write_challenge(CHALLENGE, "phone")
    signature = session.attestation("phone")
    assert 8 <= len(signature) <= protocol.ATTESTATION_MAX_LEN
    # the key the service will certify, as the service derives it from the request
    if csr_mode:
        csr = x509.load_der_x509_csr(session.csr_der)
        certified = csr.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        certified = attestation.x25519_spki_der(session.public_key)
    entry = AllowlistEntry(
        DSN, attestation.load_attestation_public_key(device_attestation.public_pem(key))
    )
    check(
        required=True,
        entry=entry,
        dsn=DSN,
        public_key_der=certified,
        signature=signature,
        challenge=CHALLENGE,
    )
    # ... and not for any other key, nor any other challenge
    other = attestation.x25519_spki_der(bytes(range(32)))
    for key_der, challenge in ((other, CHALLENGE), (certified, bytes(32))):
        with pytest.raises(Forbidden):
            check(
                required=True,
                entry=entry,
                dsn=DSN,
                public_key_der=key_der,
                signature=signature,
                challenge=challenge,
            )


def test_each_connection_has_its_own_challenge(tmp_path: Path) -> None:
    key = device_attestation.load_or_create(tmp_path)
    session = ProvisioningSession(DSN, [], tmp_path, attestation_key=key)
    public = key.public_key()
    certified = attestation.x25519_spki_der(session.public_key)
    # GIVEN the owner's app wrote its challenge, and another app in range then wrote its own
    session.write_challenge(CHALLENGE, "phone")
    session.write_challenge(bytes(32), "intruder")
    # THEN the owner's app still reads a signature over its own challenge
    public.verify(
        session.attestation("phone"),
        attestation.message(DSN, CHALLENGE, certified),
        ec.ECDSA(hashes.SHA256()),
    )
    # ... and a dropped link forgets its challenge
    session.disconnected("phone")
    assert session.attestation("phone") == b""


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_a_challenge_of_another_size_is_refused(tmp_path: Path, size: int) -> None:
    session = ProvisioningSession(
        DSN, [], tmp_path, attestation_key=device_attestation.load_or_create(tmp_path)
    )
    with pytest.raises(protocol.ProtocolError) as refused:
        session.write_challenge(bytes(size), "phone")
    assert refused.value.status is protocol.Status.ERR_LENGTH
    assert session.attestation("phone") == b""


def test_a_device_without_a_factory_key_serves_no_attestation(tmp_path: Path) -> None:
    session = ProvisioningSession(DSN, [], tmp_path)
    assert session.attestation("phone") == b""
    with pytest.raises(protocol.ProtocolError):
        session.write_challenge(CHALLENGE, "phone")
