"""What the device believes about a provisioning answer: only what proves itself.

Pure functions, no I/O. The device calls ``verify_device_certificate`` with the answer's
certificate (and chain, if any), the CA pinned in its firmware, its own DSN and the private key
it decrypted, and gets back what it may rely on: the thing name and the IoT certificate id,
both computed here from the certificate, never taken from the relay's JSON.

The checks, in order (the first failure is the refusal):

1. the certificate parses (``MALFORMED``);
2. it is valid now (``EXPIRED``);
3. it is a client certificate (``NOT_CLIENT_CERTIFICATE``): an extended key usage extension
   that names clientAuth, and not a CA (basicConstraints CA:TRUE);
4. it has a path to the pinned CA, validated as a client certificate by
   ``cryptography.x509.verification`` (``UNTRUSTED``): signatures, names, validity, key usage,
   CA flags and path lengths of every CA on the way; an intermediate may come in the chain;
5. it names this device (``WRONG_DEVICE``): exactly one SAN URI of ``rules.DSN_URI_PREFIX``,
   equal to this DSN, and a common name that is the thing name ``<ThingPrefix>_<DSN>``;
6. the private key is the certificate's (``KEY_MISMATCH``).

``check_scheme`` is the floor under the key-encryption scheme (no downgrade), and
``check_x25519_public_key`` refuses the public keys both sides refuse.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from onboarding_ble import rules

MAX_CHAIN_DEPTH = 4  # leaf, up to two intermediates, the pinned CA


class Refusal(enum.Enum):
    MALFORMED = "malformed"
    EXPIRED = "expired"
    NOT_CLIENT_CERTIFICATE = "not a client certificate"
    UNTRUSTED = "untrusted"
    WRONG_DEVICE = "wrong device"
    KEY_MISMATCH = "key mismatch"
    SCHEME = "scheme"
    PUBLIC_KEY = "public key"


class TrustError(ValueError):
    """The answer is refused; ``reason`` says which check failed. Messages hold no key data."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TrustedCertificate:
    """What the device may rely on, all derived from the validated certificate."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # the validated path after the leaf, pinned CA last
    dsn: str
    thing_name: str
    certificate_id: str  # AWS IoT's id: lowercase hex SHA-256 of the DER certificate
    not_after: dt.datetime


def load_certificates(pem: bytes | str) -> list[x509.Certificate]:
    try:  # PEM is ASCII: anything else is malformed (UnicodeEncodeError is a ValueError)
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TrustError(Refusal.MALFORMED, "not a PEM certificate") from exc


def certificate_id_of(cert: x509.Certificate) -> str:
    """The IoT certificate id: lowercase hex SHA-256 of the DER certificate."""
    return cert.fingerprint(hashes.SHA256()).hex()


def verify_device_certificate(
    certificate_pem: bytes | str,
    pinned_ca_pem: bytes | str,
    dsn: str,
    private_key: Any,
    *,
    chain_pem: bytes | str | None = None,
    thing_prefix: str | None = None,
    now: dt.datetime | None = None,
) -> TrustedCertificate:
    """Accept the certificate for this device, or raise TrustError (see the module docstring).

    ``pinned_ca_pem`` may hold several CAs (during a CA rotation); each is a trust anchor.
    ``thing_prefix`` is the fleet's ThingPrefix from firmware configuration; without it the
    prefix is read from the certificate's common name (unambiguous: a prefix has no ``_``).
    """
    now = now or dt.datetime.now(dt.UTC)
    if not rules.is_valid_dsn(dsn):
        raise ValueError("the device's own DSN breaks the DSN rule")  # firmware mistake
    if thing_prefix is not None and not rules.THING_PREFIX_PATTERN.fullmatch(thing_prefix):
        raise ValueError("the configured thing prefix breaks the ThingPrefix rule")
    leaves = load_certificates(certificate_pem)
    if len(leaves) != 1:
        raise TrustError(Refusal.MALFORMED, "certificatePem must hold exactly one certificate")
    leaf = leaves[0]
    anchors = load_certificates(pinned_ca_pem)
    if not anchors:
        raise ValueError("no certificate in the pinned CA")  # firmware mistake
    intermediates = load_certificates(chain_pem) if chain_pem else []

    path = check_client_certificate(leaf, anchors, intermediates, now)
    thing = _thing_name_of(leaf, dsn, thing_prefix)
    if not public_keys_match(leaf, private_key):
        raise TrustError(Refusal.KEY_MISMATCH, "private key does not match the certificate")
    return TrustedCertificate(
        certificate=leaf,
        chain=tuple(path),
        dsn=dsn,
        thing_name=thing,
        certificate_id=certificate_id_of(leaf),
        not_after=leaf.not_valid_after_utc,
    )


def check_client_certificate(
    leaf: x509.Certificate,
    anchors: list[x509.Certificate],
    intermediates: list[x509.Certificate] | None = None,
    now: dt.datetime | None = None,
) -> list[x509.Certificate]:
    """Checks 2-4 alone (valid now, a client certificate, a path to one of ``anchors``): the
    validated path after the leaf. For credentials already stored, whose DSN was checked."""
    now = now or dt.datetime.now(dt.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise TrustError(Refusal.EXPIRED, "certificate is not valid now")
    _require_client_certificate(leaf)
    return _validated_path(leaf, intermediates or [], anchors, now)


def _require_client_certificate(leaf: x509.Certificate) -> None:
    """Checked before the path so that the refusal names the real problem; the path policy
    checks the same again."""
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except ValueError:  # an extension that does not parse: a certificate no CA made
        raise TrustError(Refusal.MALFORMED, "certificate has a malformed extension") from None
    except x509.ExtensionNotFound:
        raise TrustError(
            Refusal.NOT_CLIENT_CERTIFICATE, "certificate has no extended key usage"
        ) from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise TrustError(Refusal.NOT_CLIENT_CERTIFICATE, "certificate is not for clientAuth")
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return
    if constraints.ca:
        raise TrustError(Refusal.NOT_CLIENT_CERTIFICATE, "certificate is a CA certificate")


def _eku_names_client_auth(
    _policy: Policy, _cert: x509.Certificate, eku: x509.ExtendedKeyUsage
) -> None:
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise ValueError("extended key usage does not include clientAuth")


def _validated_path(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    anchors: list[x509.Certificate],
    now: dt.datetime,
) -> list[x509.Certificate]:
    # The web PKI's end-entity profile, except that the EKU must be present (RFC 5280 lets an
    # absent EKU mean "any purpose"; a device certificate must say clientAuth), and the SAN is
    # left to _thing_name_of, which requires it and says WRONG_DEVICE when it names no device.
    ee_policy = (
        ExtensionPolicy.webpki_defaults_ee()
        .require_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _eku_names_client_auth)
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    )
    verifier = (
        PolicyBuilder()
        .store(Store(anchors))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        # The verifier's message names certificates and extensions, never key material.
        raise TrustError(Refusal.UNTRUSTED, f"no valid path to the pinned CA: {exc}") from exc
    return list(verified.chain[1:])


def _thing_name_of(leaf: x509.Certificate, dsn: str, thing_prefix: str | None) -> str:
    """The thing name the certificate gives this device, or WRONG_DEVICE."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise TrustError(Refusal.WRONG_DEVICE, "certificate names no device") from None
    named = [
        uri
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.lower().startswith(rules.DSN_URI_PREFIX)
    ]
    if named != [rules.dsn_uri(dsn)]:
        raise TrustError(Refusal.WRONG_DEVICE, "certificate is not for this DSN")
    common_names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(common_names) != 1 or not isinstance(common_names[0].value, str):
        raise TrustError(Refusal.WRONG_DEVICE, "certificate has no single common name")
    common_name = common_names[0].value
    prefix = thing_prefix if thing_prefix is not None else common_name.partition("_")[0]
    if not rules.THING_PREFIX_PATTERN.fullmatch(prefix):
        raise TrustError(Refusal.WRONG_DEVICE, "certificate's thing name has no valid prefix")
    thing = rules.thing_name(prefix, dsn)
    if rules.common_name_for(thing) != common_name:
        raise TrustError(Refusal.WRONG_DEVICE, "certificate's thing name is not for this DSN")
    return thing


def public_keys_match(cert: x509.Certificate, private_key: Any) -> bool:
    if not isinstance(private_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        return False
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return bool(
        cert.public_key().public_bytes(enc, fmt) == private_key.public_key().public_bytes(enc, fmt)
    )


def check_scheme(answer_scheme: str | None, minimum: str) -> str:
    """The answer's key-encryption scheme if it is at least ``minimum``; else TrustError.

    A missing ``encryption`` field means fernet-x25519 (the API's default), so a device whose
    minimum is the stronger scheme refuses an answer that leaves the field out.
    """
    if minimum not in rules.ENCRYPTION_SCHEMES:
        raise ValueError(f"unknown minimum scheme {minimum!r}")  # firmware mistake
    scheme = rules.FERNET_X25519 if answer_scheme is None else answer_scheme
    if scheme not in rules.ENCRYPTION_SCHEMES:
        raise TrustError(Refusal.SCHEME, f"unsupported encryption {str(scheme)[:40]!r}")
    order = rules.ENCRYPTION_SCHEMES_BY_STRENGTH
    if order.index(scheme) < order.index(minimum):
        raise TrustError(Refusal.SCHEME, f"encryption {scheme} is below this device's {minimum}")
    return scheme


def check_x25519_public_key(public_key: bytes) -> bytes:
    """The server's X25519 public key, refused like the Lambda refuses a device's: not 32 bytes
    or not canonical (top bit set, or a u-coordinate of p or above)."""
    if not rules.is_canonical_x25519(public_key):
        raise TrustError(Refusal.PUBLIC_KEY, "server public key is not a canonical X25519 key")
    return public_key
