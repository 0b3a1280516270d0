"""CSR mode's checks: a device's certificate request is taken only if it is one PEM PKCS#10,
signed by its own key, with a key the fleet accepts; anything else is refused with a stable code."""

from __future__ import annotations

import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from provisioning.domain.crypto import MAX_CSR_BYTES, load_device_csr
from provisioning.domain.errors import BadRequest
from provisioning.domain.models import MAX_BODY_BYTES, parse_provision_request
from tests.support.csr import (
    ec_key,
    make_csr,
    make_explicit_curve_csr,
    public_key_der,
    with_bad_signature,
)


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "EC_prime256v1"),
        (ec.generate_private_key(ec.SECP384R1()), "EC_secp384r1"),
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSA_2048"),
        (rsa.generate_private_key(public_exponent=65537, key_size=3072), "RSA_3072"),
    ],
)
def test_accepted_keys_are_named_and_their_public_half_kept(key, algorithm) -> None:
    checked = load_device_csr(make_csr(key).encode())
    assert checked.key_algorithm == algorithm
    assert checked.public_key_der == public_key_der(key)


def test_an_rsa_4096_csr_fits_the_request_limits() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    pem = make_csr(key, common_name="x" * 64, san_uris=("urn:example:" + "y" * 200,))
    assert load_device_csr(pem.encode()).key_algorithm == "RSA_4096"
    body = json.dumps({"DSN": "SN-1", "csr": pem})
    assert len(body) <= MAX_BODY_BYTES
    assert parse_provision_request(body).csr_pem == pem.encode()


def refusal(pem: str | bytes) -> str:
    with pytest.raises(BadRequest) as refused:
        load_device_csr(pem if isinstance(pem, bytes) else pem.encode())
    return refused.value.code


@pytest.mark.parametrize(
    ("pem", "code"),
    [
        ("not a pem", "CSR_INVALID"),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "CSR_INVALID",
        ),
        (make_csr().replace("CERTIFICATE REQUEST", "CERTIFICATE"), "CSR_INVALID"),
        (make_csr() + make_csr(), "CSR_INVALID"),
        (with_bad_signature(make_csr()), "CSR_INVALID"),
        (with_bad_signature(make_csr(rsa.generate_private_key(65537, 2048))), "CSR_INVALID"),
        (make_csr(hash_algorithm=hashes.SHA224()), "CSR_INVALID"),
        (
            make_csr(rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # noqa: S505
            "CSR_KEY_UNSUPPORTED",
        ),
        (
            make_csr(rsa.generate_private_key(public_exponent=3, key_size=2048)),
            "CSR_KEY_UNSUPPORTED",
        ),
        (make_csr(ec_key(ec.SECP521R1())), "CSR_KEY_UNSUPPORTED"),
        (make_csr(ec_key(ec.SECP256K1())), "CSR_KEY_UNSUPPORTED"),
        (make_csr(ed25519.Ed25519PrivateKey.generate()), "CSR_KEY_UNSUPPORTED"),
    ],
    # Named, not shown: the keys are new at each collection, and every pytest-xdist worker must
    # collect the same test names.
    ids=[
        "not a pem",
        "no body",
        "certificate label",
        "two requests",
        "bad signature",
        "bad rsa signature",
        "sha224",
        "rsa 1024",
        "rsa exponent 3",
        "p521",
        "secp256k1",
        "ed25519",
    ],
)
def test_bad_requests_are_refused_with_a_stable_code(pem: str, code: str) -> None:
    assert refusal(pem) == code


def pss_csr() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(make_name())
        .sign(
            key,
            hashes.SHA256(),
            rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        )
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def rsa_key_of(bits: int) -> rsa.RSAPrivateKey:
    """An RSA key whose modulus has exactly ``bits`` bits (OpenSSL may give one bit less)."""
    for _ in range(50):
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        if key.key_size == bits:
            return key
    raise AssertionError(f"no {bits}-bit RSA key in 50 tries")


def make_name() -> x509.Name:
    return x509.load_pem_x509_csr(make_csr().encode()).subject


GOOD = make_csr()
BEGIN, END = "-----BEGIN CERTIFICATE REQUEST-----", "-----END CERTIFICATE REQUEST-----"


@pytest.mark.parametrize(
    ("pem", "code"),
    [
        # text after the block, even text that ends like a CSR
        (GOOD + "junk\n" + END + "\n", "CSR_INVALID"),
        (GOOD + "trailing words", "CSR_INVALID"),
        ("preamble\n" + GOOD, "CSR_INVALID"),
        # RFC 1421 headers inside the block
        (GOOD.replace(BEGIN + "\n", BEGIN + "\nProc-Type: 4,ENCRYPTED\n\n"), "CSR_INVALID"),
        # base64 that is not canonical, or not base64
        (GOOD.replace("\n-----END", "=\n-----END"), "CSR_INVALID"),
        (GOOD.replace(BEGIN + "\n", BEGIN + "\n*"), "CSR_INVALID"),
        # RSA sizes Private CA does not issue for
        (make_csr(rsa_key_of(2050)), "CSR_KEY_UNSUPPORTED"),
        (make_csr(rsa_key_of(3000)), "CSR_KEY_UNSUPPORTED"),
        # an EC key that spells out its curve instead of naming it
        (make_explicit_curve_csr(), "CSR_KEY_UNSUPPORTED"),
        # an RSA-PSS signature (SHA-256: only the padding is wrong)
        (pss_csr(), "CSR_INVALID"),
    ],
    ids=[
        "second-end-line",
        "trailing-text",
        "preamble",
        "proc-type-header",
        "extra-padding",
        "not-base64",
        "rsa-2050",
        "rsa-3000",
        "explicit-ec-parameters",
        "rsa-pss",
    ],
)
def test_what_private_ca_must_never_see_is_refused(pem: str, code: str) -> None:
    assert refusal(pem) == code


def test_private_ca_gets_pem_made_again_from_the_parsed_request() -> None:
    # GIVEN a valid request written with CRLF line ends, long lines and surrounding blanks
    der = x509.load_pem_x509_csr(GOOD.encode()).public_bytes(serialization.Encoding.DER)
    import base64

    sloppy = f"\r\n{BEGIN}\r\n{base64.b64encode(der).decode()}\r\n{END}\r\n\r\n"
    # THEN it is taken, and what goes on is the canonical PEM of the same DER
    checked = load_device_csr(sloppy.encode())
    assert checked.pem == GOOD.encode()
    assert x509.load_pem_x509_csr(checked.pem).public_bytes(serialization.Encoding.DER) == der


def test_an_oversized_csr_is_refused_before_parsing() -> None:
    assert refusal(b"-----BEGIN CERTIFICATE REQUEST-----" + b"A" * MAX_CSR_BYTES) == "CSR_INVALID"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"DSN": "A1", "csr": make_csr(), "publicKey": "A" * 43 + "="}, "KEY_FIELDS_CONFLICT"),
        ({"DSN": "A1"}, "FIELD_MISSING"),
        (
            {"DSN": "A1", "csr": make_csr(), "encryption": "fernet-x25519"},
            "ENCRYPTION_NOT_APPLICABLE",
        ),
        ({"DSN": "A1", "csr": 5}, "FIELD_TYPE"),
        ({"DSN": "A1", "csr": None}, "FIELD_MISSING"),
        ({"DSN": "A1", "csr": ""}, "CSR_INVALID"),
        ({"DSN": "A1", "csr": "é" + make_csr()}, "CSR_INVALID"),
    ],
)
def test_the_request_takes_exactly_one_key_field(fields: dict[str, object], code: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_provision_request(json.dumps(fields))
    assert refused.value.code == code


def test_a_csr_request_is_parsed_in_csr_mode() -> None:
    pem = make_csr()
    request = parse_provision_request(json.dumps({"DSN": "SN-9", "csr": pem}))
    assert request.csr_mode
    assert request.device_public_key == b""
