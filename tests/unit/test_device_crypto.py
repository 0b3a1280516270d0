"""The device can decrypt what the server encrypts, and bad device keys are refused."""

import base64

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.x509.oid import NameOID

from provisioning.crypto import (
    agree_with_device,
    build_csr,
    encrypt_private_key,
    generate_device_key,
)
from provisioning.errors import BadRequest
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
    exchange = agree_with_device(raw_public(device))
    key = generate_device_key(algorithm)

    token = encrypt_private_key(key, exchange, "fernet-x25519", "SN-1")

    pem = device_decrypts(device, exchange.server_public_key, token)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert loaded.public_key().public_numbers() == key.public_key().public_numbers()
    assert b"PRIVATE KEY" not in token.encode()


def test_another_device_cannot_decrypt() -> None:
    device, eavesdropper = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    exchange = agree_with_device(raw_public(device))
    token = encrypt_private_key(
        generate_device_key("EC_prime256v1"), exchange, "fernet-x25519", "SN-1"
    )
    with pytest.raises(InvalidToken):
        device_decrypts(eavesdropper, exchange.server_public_key, token)


def test_the_device_decrypts_the_hkdf_aes_gcm_scheme() -> None:
    device = x25519.X25519PrivateKey.generate()
    exchange = agree_with_device(raw_public(device))
    key = generate_device_key("EC_prime256v1")

    token = encrypt_private_key(key, exchange, "x25519-hkdf-sha256-aes256gcm", "SN-42")

    pem = device_decrypts_gcm(device, exchange.server_public_key, token, "SN-42")
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert loaded.public_key().public_numbers() == key.public_key().public_numbers()
    # bound to the DSN: an answer for another device's serial does not open
    with pytest.raises(InvalidTag):
        device_decrypts_gcm(device, exchange.server_public_key, token, "SN-43")


def test_each_request_uses_a_fresh_server_key() -> None:
    device = raw_public(x25519.X25519PrivateKey.generate())
    assert (
        agree_with_device(device).server_public_key != agree_with_device(device).server_public_key
    )


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
        agree_with_device(point)
    assert refused.value.code == "PUBLIC_KEY_LOW_ORDER"


def test_the_csr_names_the_thing_and_the_configured_subject() -> None:
    key = generate_device_key("EC_prime256v1")
    csr = x509.load_pem_x509_csr(build_csr(key, "device_SN1", o="Example", ou="Fleet", c="US"))
    assert csr.is_signature_valid
    attrs = {a.oid: a.value for a in csr.subject}
    assert attrs == {
        NameOID.COMMON_NAME: "device_SN1",
        NameOID.ORGANIZATION_NAME: "Example",
        NameOID.ORGANIZATIONAL_UNIT_NAME: "Fleet",
        NameOID.COUNTRY_NAME: "US",
    }
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)


def test_rsa_is_available_as_a_configuration_option() -> None:
    key = generate_device_key("RSA_2048")
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
