"""Certificate requests as a device (or an attacker) would make them."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

CsrKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def make_csr(
    key: CsrKey | None = None,
    *,
    common_name: str = "anything-the-device-likes",
    san_uris: tuple[str, ...] = (),
    ca: bool = False,
    hash_algorithm: hashes.HashAlgorithm | None = None,
) -> str:
    """A PEM CSR; by default a P-256 key and a subject the service must ignore."""
    key = key or ec_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mallory Inc"),
            ]
        )
    )
    if san_uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in san_uris]),
            critical=False,
        )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    algorithm = (
        None if isinstance(key, ed25519.Ed25519PrivateKey) else (hash_algorithm or hashes.SHA256())
    )
    csr = builder.sign(key, algorithm)
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def with_bad_signature(pem: str) -> str:
    """The same request with one bit of its signature flipped."""
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(bytes(der)).decode(), 64))
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"


def public_key_der(key: CsrKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8)
    return bytes([tag, 0x80 | len(length)]) + length + content


def _der_items(der: bytes) -> list[bytes]:
    """The whole TLVs one after another in ``der`` (the content of a SEQUENCE)."""
    items, offset = [], 0
    while offset < len(der):
        size, start = der[offset + 1], offset + 2
        if size & 0x80:
            count = size & 0x7F
            size, start = int.from_bytes(der[start : start + count]), start + count
        items.append(der[offset : start + size])
        offset = start + size
    return items


def _content(tlv: bytes) -> bytes:
    (item,) = _der_items(tlv)
    size, start = item[1], 2
    if size & 0x80:
        start += size & 0x7F
    return item[start:]


def _integer(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


# P-256 (SEC 2, 2.4.2), spelled out as explicit ECParameters.
_P256 = {
    "p": 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
    "b": 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    "gx": 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    "gy": 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
    "n": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}


def explicit_curve_spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The P-256 key's SubjectPublicKeyInfo DER with the curve's explicit parameters instead of
    its name (RFC 3279 allows both; RFC 5480 says to name it)."""
    c = _P256
    p32 = [v.to_bytes(32, "big") for v in (c["p"] - 3, c["b"], c["gx"], c["gy"])]
    parameters = _der(
        0x30,
        _integer(1)
        + _der(0x30, _der(0x06, bytes.fromhex("2a8648ce3d0101")) + _integer(c["p"]))
        + _der(0x30, _der(0x04, p32[0]) + _der(0x04, p32[1]))
        + _der(0x04, b"\x04" + p32[2] + p32[3])
        + _integer(c["n"])
        + _integer(1),
    )
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return _der(
        0x30,
        _der(0x30, _der(0x06, bytes.fromhex("2a8648ce3d0201")) + parameters)
        + _der(0x03, b"\x00" + point),
    )


def unknown_algorithm_spki() -> bytes:
    """A SubjectPublicKeyInfo of an algorithm no library knows (a private-use OID)."""
    algorithm = _der(
        0x30, _der(0x06, bytes.fromhex("2b0601040182e3770101"))
    )  # 1.3.6.1.4.1.45559.1.1
    return _der(0x30, algorithm + _der(0x03, b"\x00" + bytes(32)))


def make_explicit_curve_csr(key: ec.EllipticCurvePrivateKey | None = None) -> str:
    """A P-256 CSR, validly signed, whose key carries the curve's explicit parameters instead of
    naming it (RFC 3279 allows both; RFC 5480 says to name it)."""
    key = key or ec_key()
    spki = explicit_curve_spki(key)
    named = x509.load_pem_x509_csr(make_csr(key).encode())
    request, algorithm, _ = _der_items(_content(named.public_bytes(serialization.Encoding.DER)))
    version, subject, _, attributes = _der_items(_content(request))
    info = _der(0x30, version + subject + spki + attributes)
    signature = key.sign(info, ec.ECDSA(hashes.SHA256()))
    der = _der(0x30, info + algorithm + _der(0x03, b"\x00" + signature))
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"
