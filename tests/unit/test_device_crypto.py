"""The device can decrypt what the server encrypts, and bad device keys are refused."""

import base64

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.x509.oid import NameOID

from provisioning.domain.crypto import (
    build_csr,
    check_device_public_key,
    generate_device_key,
    seal_private_key,
)
from provisioning.domain.errors import BadRequest
from tests.support.device_crypto import device_decrypts_gcm


def raw_public(key: x25519.X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def device_decrypts(device: x25519.X25519PrivateKey, server_public: bytes, token: str) -> bytes:
    """What firmware does: the same X25519 agreement from its side, then Fernet."""
    shared = device.exchange(x25519.X25519PublicKey.from_public_bytes(server_public))
    return Fernet(base64.urlsafe_b64encode(shared)).decrypt(token.encode())


@pytest.mark.parametrize("algorithm", ["EC_prime256v1", "RSA_2048"])
def test_the_device_decrypts_its_private_key(algorithm: str) -> None:
    device = x25519.X25519PrivateKey.generate()
    key = generate_device_key(algorithm)

    sealed = seal_private_key(key, raw_public(device), "fernet-x25519", "SN-1")

    pem = device_decrypts(device, sealed.server_public_key, sealed.encrypted_private_key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert loaded.public_key().public_numbers() == key.public_key().public_numbers()
    assert "PRIVATE KEY" not in repr(sealed)


def test_another_device_cannot_decrypt() -> None:
    device, eavesdropper = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    sealed = seal_private_key(
        generate_device_key("EC_prime256v1"), raw_public(device), "fernet-x25519", "SN-1"
    )
    with pytest.raises(InvalidToken):
        device_decrypts(eavesdropper, sealed.server_public_key, sealed.encrypted_private_key)


def test_the_device_decrypts_the_hkdf_aes_gcm_scheme() -> None:
    device = x25519.X25519PrivateKey.generate()
    key = generate_device_key("EC_prime256v1")

    sealed = seal_private_key(key, raw_public(device), "x25519-hkdf-sha256-aes256gcm", "SN-42")

    token = sealed.encrypted_private_key
    pem = device_decrypts_gcm(device, sealed.server_public_key, token, "SN-42")
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert loaded.public_key().public_numbers() == key.public_key().public_numbers()
    # bound to the DSN: an answer for another device's serial does not open
    with pytest.raises(InvalidTag):
        device_decrypts_gcm(device, sealed.server_public_key, token, "SN-43")


def test_each_request_uses_a_fresh_server_key() -> None:
    device = raw_public(x25519.X25519PrivateKey.generate())
    key = generate_device_key("EC_prime256v1")
    first, second = (seal_private_key(key, device, "fernet-x25519", "SN-1") for _ in range(2))
    assert first.server_public_key != second.server_public_key


# Points of small order on Curve25519: each makes the shared secret all zeros.
LOW_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_a_low_order_public_key_is_a_bad_request(point: bytes) -> None:
    with pytest.raises(BadRequest) as refused:
        check_device_public_key(point)
    assert refused.value.code == "PUBLIC_KEY_LOW_ORDER"


def test_a_public_key_with_the_top_bit_set_is_refused_not_masked() -> None:
    # RFC 7748 masks the bit in the agreement, but the HKDF context would carry the unmasked
    # bytes and the device its own: both sides refuse instead (onboarding_ble.trust too).
    device = bytearray(raw_public(x25519.X25519PrivateKey.generate()))
    check_device_public_key(bytes(device))
    device[31] |= 0x80

    with pytest.raises(BadRequest) as refused:
        check_device_public_key(bytes(device))
    assert refused.value.code == "PUBLIC_KEY_INVALID"


@pytest.mark.parametrize("offset", [0, 1, 18])
def test_a_public_key_at_or_above_the_field_prime_is_refused(offset: int) -> None:
    non_canonical = (2**255 - 19 + offset).to_bytes(32, "little")

    with pytest.raises(BadRequest) as refused:
        check_device_public_key(non_canonical)
    assert refused.value.code == "PUBLIC_KEY_INVALID"


def test_the_csr_names_the_thing_and_the_configured_subject() -> None:
    key = generate_device_key("EC_prime256v1")
    csr = x509.load_pem_x509_csr(
        build_csr(key, "device_SN1", "SN1", o="Example", ou="Fleet", c="US")
    )
    assert csr.is_signature_valid
    attrs = {a.oid: a.value for a in csr.subject}
    assert attrs == {
        NameOID.COMMON_NAME: "device_SN1",
        NameOID.ORGANIZATION_NAME: "Example",
        NameOID.ORGANIZATIONAL_UNIT_NAME: "Fleet",
        NameOID.COUNTRY_NAME: "US",
    }
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)
    # the exact name a device checks: its DSN in a SAN URI
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:iot-device-onboarding:dsn:SN1"
    ]


def test_rsa_is_available_as_a_configuration_option() -> None:
    key = generate_device_key("RSA_2048")
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
