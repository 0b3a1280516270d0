"""The device's answer check (onboarding_ble.credentials.verify_answer) against issue 11's attacks.

Answers are sealed with the API's own code (provisioning.domain.crypto.seal_private_key);
certificates have AWS's EndEntityClientAuthCertificate/V1 profile (tests/support/device_answers.py).
"""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID

from onboarding_ble import credentials, rules
from onboarding_ble.protocol import ProtocolError, Status
from provisioning.domain.crypto import seal_private_key
from tests.support.device_answers import issue, make_ca

DSN = "SN-0001"
GCM = rules.HKDF_AES_GCM
RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


@pytest.fixture(scope="module")
def ca():
    return make_ca("Fleet Root CA")


@pytest.fixture
def device():
    return X25519PrivateKey.generate()


def sealed_answer(device, cert, key, scheme=rules.FERNET_X25519, encrypted_for=DSN, **extra):
    """The JSON an app relays: the API's encryption of ``key`` to ``device``, plus ``extra``."""
    sealed = seal_private_key(key, device.public_key().public_bytes(*RAW), scheme, encrypted_for)
    body = {
        "certificatePem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "encryptedPrivateKey": sealed.encrypted_private_key,
        "publicKey": base64.b64encode(sealed.server_public_key).decode(),
        "encryption": scheme,
    }
    body.update(extra)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def refused(payload, device, ca_cert, **kwargs) -> Status:
    with pytest.raises(ProtocolError) as caught:
        credentials.verify_answer(payload, device, DSN, [ca_cert], **kwargs)
    return caught.value.status


@pytest.mark.parametrize("scheme", rules.ENCRYPTION_SCHEMES)
@pytest.mark.parametrize("thing_name", [None, f"device_{DSN}"])
def test_a_genuine_certificate_for_another_device_is_refused(ca, device, scheme, thing_name):
    # GIVEN a member provisioned the fake DSN "x_SN-0001" and re-encrypted its key to the
    # victim's public key under an ephemeral key of their own (issue 11, attack 1), with the
    # JSON's thingName claiming the victim or left out
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(ca, key, dsn=f"x_{DSN}")
    payload = sealed_answer(device, cert, key, scheme, thingName=thing_name)

    assert refused(payload, device, ca[1]) is Status.ERR_DSN_MISMATCH


def test_the_thing_name_and_certificate_id_come_from_the_certificate(ca, device):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(ca, key, dsn=DSN)
    payload = sealed_answer(device, cert, key, thingName="device_victim", certificateId="00" * 32)

    answer = credentials.verify_answer(payload, device, DSN, [ca[1]])

    assert answer.thing_name == "device_SN-0001"
    assert answer.certificate_id == cert.fingerprint(hashes.SHA256()).hex()


def test_a_configured_endpoint_wins_over_the_relays(ca, device):
    # issue 11, attack 2: the relay points the device at its own account's endpoint
    key = ec.generate_private_key(ec.SECP256R1())
    payload = sealed_answer(
        device, issue(ca, key, dsn=DSN), key, iotEndpoint="evil-ats.iot.eu-west-1.amazonaws.com"
    )
    pinned = "abc123-ats.iot.eu-west-1.amazonaws.com"

    answer = credentials.verify_answer(payload, device, DSN, [ca[1]], iot_endpoint=pinned)

    assert answer.iot_endpoint == pinned


@pytest.mark.parametrize(
    "bend",
    [
        {"is_ca": True},
        {"eku": (ExtendedKeyUsageOID.SERVER_AUTH,)},
        {"eku": (ExtendedKeyUsageOID.CODE_SIGNING,)},
        {"eku": None},
    ],
    ids=["CA:TRUE", "serverAuth only", "codeSigning only", "no EKU"],
)
def test_a_certificate_that_is_not_a_device_certificate_is_refused(ca, device, bend):
    # issue 11, attack 3
    key = ec.generate_private_key(ec.SECP256R1())
    payload = sealed_answer(device, issue(ca, key, dsn=DSN, **bend), key)

    assert refused(payload, device, ca[1]) is Status.ERR_UNTRUSTED_CA


def test_a_certificate_from_an_intermediate_of_the_pinned_root_is_accepted(ca, device):
    # GIVEN firmware that pins the root, and the issuing CA pinned beside it
    intermediate = make_ca("Fleet Issuing CA", issuer=ca, path_length=0)
    key = ec.generate_private_key(ec.SECP256R1())
    payload = sealed_answer(device, issue(intermediate, key, dsn=DSN), key)

    answer = credentials.verify_answer(payload, device, DSN, [ca[1], intermediate[1]])

    assert answer.thing_name == "device_SN-0001"
    assert refused(payload, device, ca[1]) is Status.ERR_UNTRUSTED_CA  # no path without it


@pytest.mark.parametrize("scheme", [rules.FERNET_X25519, None])
def test_an_answer_below_the_minimum_scheme_is_refused(ca, device, scheme):
    # issue 11, attack 4: the relay asks for, or claims, the weaker scheme
    key = ec.generate_private_key(ec.SECP256R1())
    payload = sealed_answer(device, issue(ca, key, dsn=DSN), key)
    body = json.loads(payload)
    if scheme is None:
        del body["encryption"]  # a missing field means fernet-x25519
    payload = json.dumps(body).encode()

    assert refused(payload, device, ca[1], minimum_scheme=GCM) is Status.ERR_FORMAT
    assert credentials.verify_answer(payload, device, DSN, [ca[1]]).thing_name


def test_the_stronger_scheme_meets_its_own_minimum(ca, device):
    key = ec.generate_private_key(ec.SECP256R1())
    payload = sealed_answer(device, issue(ca, key, dsn=DSN), key, GCM)

    assert credentials.verify_answer(payload, device, DSN, [ca[1]], minimum_scheme=GCM)


def test_a_server_key_with_the_top_bit_set_is_refused(ca, device):
    key = ec.generate_private_key(ec.SECP256R1())
    body = json.loads(sealed_answer(device, issue(ca, key, dsn=DSN), key))
    server = bytearray(base64.b64decode(body["publicKey"]))
    server[31] |= 0x80  # the same point once masked: the agreement alone would not notice
    body["publicKey"] = base64.b64encode(bytes(server)).decode()

    assert refused(json.dumps(body).encode(), device, ca[1]) is Status.ERR_FORMAT


def test_the_answer_object_never_shows_its_private_key(ca, device):
    key = ec.generate_private_key(ec.SECP256R1())
    answer = credentials.verify_answer(
        sealed_answer(device, issue(ca, key, dsn=DSN), key), device, DSN, [ca[1]]
    )

    assert b"PRIVATE KEY" in answer.private_key_pem
    assert "PRIVATE KEY" not in repr(answer) and "private_key_pem" not in repr(answer)


def test_stored_credentials_are_rechecked_for_this_device(ca, device, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    answer = credentials.verify_answer(
        sealed_answer(device, issue(ca, key, dsn=DSN), key), device, DSN, [ca[1]]
    )
    credentials.store(tmp_path, answer)

    assert credentials.load_valid(tmp_path, [ca[1]], dsn=DSN) is not None
    assert credentials.load_valid(tmp_path, [ca[1]], dsn="SN-0002") is None
    assert credentials.load_valid(tmp_path, [make_ca()[1]]) is None


def test_the_answers_chain_leads_to_the_pinned_root_and_is_stored_beside_the_certificate(
    ca, device, tmp_path
):
    # GIVEN firmware that pins the root only, and an answer from its issuing CA that carries
    # the issuing CA's certificate, then the root's, as the API answers
    issuing = make_ca("Fleet Issuing CA", issuer=ca, path_length=0)
    key = ec.generate_private_key(ec.SECP256R1())
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (issuing[1], ca[1]))
    payload = sealed_answer(
        device, issue(issuing, key, dsn=DSN), key, certificateChainPem=chain.decode()
    )

    # WHEN the device checks it, THEN it is accepted on the path through the issuing CA
    answer = credentials.verify_answer(payload, device, DSN, [ca[1]])
    assert answer.intermediates == (issuing[1],)
    # ... and the issuing CA is stored with it: stored credentials pass the boot check
    credentials.store(tmp_path, answer)
    assert credentials.load_valid(tmp_path, [ca[1]], dsn=DSN) is not None
    assert credentials.load_valid(tmp_path, [ca[1]]) is not None
    # ... which fails with a chain padded past any answer's size (not one the device stored)
    stored = (tmp_path / credentials.CHAIN_FILE).read_bytes()
    (tmp_path / credentials.CHAIN_FILE).write_bytes(stored + b"A" * credentials.MAX_CHAIN_BYTES)
    assert credentials.load_valid(tmp_path, [ca[1]], dsn=DSN) is None
    # ... and without the stored chain (no path to the root)
    (tmp_path / credentials.CHAIN_FILE).unlink()
    assert credentials.load_valid(tmp_path, [ca[1]], dsn=DSN) is None


def test_a_chain_is_a_hint_never_a_trust_anchor(ca, device):
    # GIVEN an answer from a CA the device does not know, whose chain names that CA's own root
    stranger = make_ca("Stranger Root CA")
    issuing = make_ca("Stranger Issuing CA", issuer=stranger, path_length=0)
    key = ec.generate_private_key(ec.SECP256R1())
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (issuing[1], stranger[1]))
    payload = sealed_answer(
        device, issue(issuing, key, dsn=DSN), key, certificateChainPem=chain.decode()
    )
    # THEN it is refused: only the pinned root anchors a path
    assert refused(payload, device, ca[1]) is Status.ERR_UNTRUSTED_CA
    # ... and a chain that is not a string is a malformed answer
    payload = sealed_answer(device, issue(ca, key, dsn=DSN), key, certificateChainPem=["x"])
    assert refused(payload, device, ca[1]) is Status.ERR_FORMAT


def test_stored_files_that_are_not_what_the_device_stored_are_refused_without_blocking(
    ca, device, tmp_path
):
    # GIVEN stored credentials, then a FIFO (a read would wait for a writer forever) or a
    # device file in place of the chain
    key = ec.generate_private_key(ec.SECP256R1())
    answer = credentials.verify_answer(
        sealed_answer(device, issue(ca, key, dsn=DSN), key), device, DSN, [ca[1]]
    )
    credentials.store(tmp_path, answer)
    assert credentials.load_valid(tmp_path, [ca[1]], dsn=DSN) is not None
    chain = tmp_path / credentials.CHAIN_FILE
    chain.unlink()
    os.mkfifo(chain)
    # THEN the boot check refuses them at once (the device provisions again)
    assert credentials.load_valid(tmp_path, [ca[1]], dsn=DSN) is None
    chain.unlink()
    chain.symlink_to("/dev/zero")
    assert credentials.load_valid(tmp_path, [ca[1]], dsn=DSN) is None
