"""The device's trust in an answer's certificate (onboarding_ble.trust), attack by attack.

Certificates are built here with the profile AWS documents for EndEntityClientAuthCertificate/V1
(tests/support/device_answers.py); each attack bends one part of it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from onboarding_ble import rules, trust
from onboarding_ble.trust import Refusal, TrustError
from tests.support.device_answers import NOW, issue, make_ca

DSN = "SN-0001"
PEM = serialization.Encoding.PEM


def pem(*certs) -> bytes:
    return b"".join(c.public_bytes(PEM) for c in certs)


@pytest.fixture(scope="module")
def root():
    return make_ca("Fleet Root CA")


@pytest.fixture
def key():
    return ec.generate_private_key(ec.SECP256R1())


def verify(cert, root_cert, key, dsn=DSN, **kwargs):
    return trust.verify_device_certificate(pem(cert), pem(root_cert), dsn, key, **kwargs)


def refusal(cert, root_cert, key, dsn=DSN, **kwargs) -> Refusal:
    with pytest.raises(TrustError) as refused:
        verify(cert, root_cert, key, dsn, **kwargs)
    return refused.value.reason


# --- accepted ----------------------------------------------------------------------------------


def test_a_certificate_from_the_pinned_root_for_this_dsn_is_trusted(root, key):
    cert = issue(root, key, dsn=DSN)

    trusted = verify(cert, root[1], key)

    # GIVEN nothing from the relay's JSON, the device knows its thing name and certificate id
    assert trusted.thing_name == "device_SN-0001"
    assert trusted.certificate_id == cert.fingerprint(hashes.SHA256()).hex()
    assert trusted.not_after == cert.not_valid_after_utc
    assert trusted.chain == (root[1],)


def test_a_certificate_from_an_intermediate_sent_in_the_chain_is_trusted(root, key):
    intermediate = make_ca("Fleet Issuing CA", issuer=root, path_length=0)
    cert = issue(intermediate, key, dsn=DSN)

    trusted = verify(cert, root[1], key, chain_pem=pem(intermediate[1]))

    assert trusted.chain == (intermediate[1], root[1])
    # without the intermediate there is no path
    assert refusal(cert, root[1], key) is Refusal.UNTRUSTED


def test_the_configured_thing_prefix_must_be_the_certificates(root, key):
    cert = issue(root, key, dsn=DSN, thing_prefix="fleet-7")

    assert verify(cert, root[1], key, thing_prefix="fleet-7").thing_name == "fleet-7_SN-0001"
    assert refusal(cert, root[1], key, thing_prefix="device") is Refusal.WRONG_DEVICE


def test_a_long_thing_name_is_matched_through_its_shortened_common_name(root, key):
    dsn = "Z" * 115
    thing = "device_" + dsn
    cert = issue(root, key, dsn=dsn, common_name=rules.common_name_for(thing))

    assert verify(cert, root[1], key, dsn=dsn).thing_name == thing


def test_any_of_several_pinned_cas_is_a_trust_anchor(root, key):
    # GIVEN a CA rotation: firmware pins the old and the new CA
    new_root = make_ca("Fleet Root CA 2")
    cert = issue(new_root, key, dsn=DSN)

    trusted = trust.verify_device_certificate(pem(cert), pem(root[1], new_root[1]), DSN, key)

    assert trusted.thing_name == "device_SN-0001"


# --- refused: not for this device (issue 11, attack 1) -----------------------------------------


def test_a_certificate_for_another_dsn_is_refused(root, key):
    assert refusal(issue(root, key, dsn="SN-0002"), root[1], key) is Refusal.WRONG_DEVICE


def test_a_certificate_for_a_dsn_that_ends_in_this_one_is_refused(root, key):
    # The attacker provisions "x_SN-0001": thing "device_x_SN-0001" ends in "_SN-0001".
    cert = issue(root, key, dsn="x_SN-0001")

    assert refusal(cert, root[1], key) is Refusal.WRONG_DEVICE


def test_a_prefix_with_an_underscore_cannot_make_another_dsn_look_like_this_one(root, key):
    # GIVEN thing "device_x_SN-0001" read as prefix "device_x" + DSN "SN-0001": the SAN says
    # otherwise, and a prefix cannot hold "_"
    cert = issue(root, key, dsn="x_SN-0001")
    assert refusal(cert, root[1], key, thing_prefix="device") is Refusal.WRONG_DEVICE
    with pytest.raises(ValueError):
        verify(issue(root, key, dsn=DSN), root[1], key, thing_prefix="device_x")


def test_a_certificate_naming_no_device_is_refused(root, key):
    assert refusal(issue(root, key), root[1], key) is Refusal.WRONG_DEVICE


def test_a_certificate_naming_two_devices_is_refused(root, key):
    uris = [rules.dsn_uri(DSN), rules.dsn_uri("SN-0002")]
    cert = issue(root, key, dsn=DSN, uris=uris)

    assert refusal(cert, root[1], key) is Refusal.WRONG_DEVICE


def test_the_dsn_is_compared_exactly(root, key):
    cert = issue(root, key, dsn=DSN, uris=[rules.dsn_uri("sn-0001")])

    assert refusal(cert, root[1], key) is Refusal.WRONG_DEVICE


def test_a_common_name_for_another_thing_is_refused(root, key):
    cert = issue(root, key, dsn=DSN, common_name="device_SN-0002")

    assert refusal(cert, root[1], key) is Refusal.WRONG_DEVICE


# --- refused: not a client certificate, or no path (issue 11, attack 3) -----------------------


def test_a_leaf_with_ca_true_is_refused(root, key):
    cert = issue(root, key, dsn=DSN, is_ca=True)

    assert refusal(cert, root[1], key) is Refusal.NOT_CLIENT_CERTIFICATE


@pytest.mark.parametrize(
    "eku",
    [(ExtendedKeyUsageOID.SERVER_AUTH,), (ExtendedKeyUsageOID.CODE_SIGNING,), None],
    ids=["serverAuth only", "codeSigning only", "no EKU"],
)
def test_a_leaf_that_is_not_for_client_authentication_is_refused(root, key, eku):
    cert = issue(root, key, dsn=DSN, eku=eku)

    assert refusal(cert, root[1], key) is Refusal.NOT_CLIENT_CERTIFICATE


def test_the_path_policy_itself_refuses_a_leaf_without_client_auth(root, key):
    # The EKU check before the path only names the problem; the path policy holds on its own.
    cert = issue(root, key, dsn=DSN, eku=(ExtendedKeyUsageOID.SERVER_AUTH,))

    with pytest.raises(TrustError) as refused:
        trust._validated_path(cert, [], [root[1]], NOW)
    assert refused.value.reason is Refusal.UNTRUSTED


def test_a_certificate_from_another_ca_with_the_same_name_is_refused(root, key):
    rogue = make_ca("Fleet Root CA")  # same name, other key: only the signature tells

    assert refusal(issue(rogue, key, dsn=DSN), root[1], key) is Refusal.UNTRUSTED


def test_an_intermediate_past_its_path_length_is_refused(root, key):
    # GIVEN root -> issuing CA (path length 0) -> a CA it should not have made -> leaf
    issuing = make_ca("Fleet Issuing CA", issuer=root, path_length=0)
    below = make_ca("Unauthorised CA", issuer=issuing)
    cert = issue(below, key, dsn=DSN)

    chain = pem(below[1], issuing[1])
    assert refusal(cert, root[1], key, chain_pem=chain) is Refusal.UNTRUSTED


def test_a_leaf_signed_by_a_non_ca_certificate_is_refused(root, key):
    # GIVEN a genuine device certificate used as if it were a CA
    device_key = ec.generate_private_key(ec.SECP256R1())
    device_cert = issue(root, device_key, dsn="SN-attacker")
    cert = issue((device_key, device_cert), key, dsn=DSN)

    assert refusal(cert, root[1], key, chain_pem=pem(device_cert)) is Refusal.UNTRUSTED


def test_an_expired_certificate_is_refused(root, key):
    cert = issue(root, key, dsn=DSN, days=-0.5)

    assert refusal(cert, root[1], key) is Refusal.EXPIRED


def test_a_certificate_not_yet_valid_on_the_device_clock_is_refused(root, key):
    cert = issue(root, key, dsn=DSN)

    assert refusal(cert, root[1], key, now=NOW - dt.timedelta(days=2)) is Refusal.EXPIRED


def test_an_expired_intermediate_breaks_the_path(root, key):
    intermediate = make_ca("Fleet Issuing CA", issuer=root, path_length=0, days=2)
    cert = issue(intermediate, key, dsn=DSN, days=30)
    later = NOW + dt.timedelta(days=5)

    reason = refusal(cert, root[1], key, chain_pem=pem(intermediate[1]), now=later)
    assert reason is Refusal.UNTRUSTED


# --- refused: the key ------------------------------------------------------------------------


def test_a_key_that_is_not_the_certificates_is_refused(root, key):
    cert = issue(root, key, dsn=DSN)
    other = ec.generate_private_key(ec.SECP256R1())

    assert refusal(cert, root[1], other) is Refusal.KEY_MISMATCH


def test_the_result_holds_no_key_material(root, key):
    trusted = verify(issue(root, key, dsn=DSN), root[1], key)

    assert not any("key" in field.name for field in dataclasses.fields(trusted))


# --- scheme floor (issue 11, attack 4) --------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "minimum", "accepted"),
    [
        (None, rules.FERNET_X25519, rules.FERNET_X25519),
        (rules.FERNET_X25519, rules.FERNET_X25519, rules.FERNET_X25519),
        (rules.HKDF_AES_GCM, rules.FERNET_X25519, rules.HKDF_AES_GCM),
        (rules.HKDF_AES_GCM, rules.HKDF_AES_GCM, rules.HKDF_AES_GCM),
    ],
)
def test_a_scheme_at_or_above_the_minimum_is_accepted(answer, minimum, accepted):
    assert trust.check_scheme(answer, minimum) == accepted


@pytest.mark.parametrize("answer", [None, rules.FERNET_X25519, "none", "FERNET-X25519"])
def test_a_scheme_below_the_minimum_or_unknown_is_refused(answer):
    # A relay that drops "encryption" or sets it to fernet cannot downgrade the device.
    with pytest.raises(TrustError) as refused:
        trust.check_scheme(answer, rules.HKDF_AES_GCM)
    assert refused.value.reason is Refusal.SCHEME


def test_an_unknown_minimum_is_a_configuration_mistake():
    with pytest.raises(ValueError):
        trust.check_scheme(rules.HKDF_AES_GCM, "rot13")


# --- X25519 public keys (issue 11, item 6) ----------------------------------------------------


def test_a_server_key_with_the_top_bit_set_is_refused():
    key = bytearray(range(1, 33))
    assert trust.check_x25519_public_key(bytes(key)) == bytes(key)
    key[31] |= 0x80
    with pytest.raises(TrustError) as refused:
        trust.check_x25519_public_key(bytes(key))
    assert refused.value.reason is Refusal.PUBLIC_KEY
