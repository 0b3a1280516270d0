"""Bridges for the places where moto differs from AWS in ways the product relies on.

Applied by the offline stack (before its moto server starts) and by the test session, never by
Lambda code. Each bridge names the gap it closes.
"""

from __future__ import annotations

import datetime
import json
import threading
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.moto_bridges import lifetime

# The end-entity templates bridged below, by the part of the ARN after the partition, and the
# one extended key usage each gives.
END_ENTITY_TEMPLATES = {
    "acm-pca:::template/EndEntityClientAuthCertificate/V1": ExtendedKeyUsageOID.CLIENT_AUTH,
    "acm-pca:::template/EndEntityClientAuthCertificate_APIPassthrough/V1": (
        ExtendedKeyUsageOID.CLIENT_AUTH
    ),
    "acm-pca:::template/EndEntityServerAuthCertificate/V1": ExtendedKeyUsageOID.SERVER_AUTH,
}
_applied = False


def apply() -> None:
    """Apply every bridge below, once per process."""
    global _applied
    if _applied:
        return
    _client_auth_template()
    _subordinate_ca_template()
    _api_passthrough()
    _atomic_dynamodb_requests()
    _revoked_is_terminal()
    _certificate_id_is_der_sha256()
    _account_data_endpoint()
    _delete_connection()
    _usage_mode_and_validity()
    _sign_in_by_alias()
    _applied = True


# The account's data endpoint as IoT's DescribeEndpoint names it: "<id>-ats.iot.<region>...".
ACCOUNT_DATA_ENDPOINT = r"https?://[a-z0-9]+-ats\.iot\.(.+)\.amazonaws\.com"
# The letters of the endpoint id below: lower-case letters and digits like AWS's, without "s",
# so that no id contains "s3" (or "sqs"): moto's in-process mock routes any host containing
# "s3" before ".amazonaws.com" to its S3 mock, ahead of the pattern added below.
ENDPOINT_ID_LETTERS = "abcdefghijklmnopqrtuvwxyz0123456789"
ENDPOINT_ID_LENGTH = 14


def endpoint_id(account_id: str, region: str) -> str:
    """The stable id of an account's IoT endpoints in a region (AWS's is stable too)."""
    import hashlib

    number = int.from_bytes(hashlib.sha256(f"{account_id}:{region}".encode()).digest())
    letters = []
    for _ in range(ENDPOINT_ID_LENGTH):
        number, index = divmod(number, len(ENDPOINT_ID_LETTERS))
        letters.append(ENDPOINT_ID_LETTERS[index])
    return "".join(letters)


def _account_data_endpoint() -> None:
    """Gap (moto 5.2): moto's DescribeEndpoint(iot:Data-ATS) answers an account-specific
    "<id>-ats.iot.<region>.amazonaws.com", as AWS does, but its in-process mock serves iot-data
    only on the generic "data-ats.iot.<region>.amazonaws.com". AWS serves the account's data
    plane on the address DescribeEndpoint gives, which is what the renewal function publishes
    to; route that address to moto's iot-data too. (moto's server mode is not concerned: there
    every request goes to the one endpoint configured.)

    Gap (moto 5.2): moto draws a new random id at every DescribeEndpoint, where AWS's address
    is fixed per account and region; a random id containing "s3" (about 1 % of them) sent the
    publish to moto's S3 mock. The id is made stable, from letters that cannot spell "s3".
    """
    import re

    from moto import backend_index
    from moto.iot.models import IoTBackend
    from moto.iotdata import urls

    if ACCOUNT_DATA_ENDPOINT not in urls.url_bases:
        urls.url_bases.append(ACCOUNT_DATA_ENDPOINT)
        backend_index.backend_url_patterns.append(("iotdata", re.compile(ACCOUNT_DATA_ENDPOINT)))

    original = IoTBackend.describe_endpoint

    def describe_endpoint(self: Any, endpoint_type: str) -> Any:
        endpoint = original(self, endpoint_type)
        # The id is what precedes the first "." (and "-ats"): keep the rest of moto's address.
        drawn = endpoint.endpoint.split(".", 1)[0].removesuffix("-ats")
        stable = endpoint_id(self.account_id, self.region_name)
        endpoint.endpoint = stable + endpoint.endpoint[len(drawn) :]
        return endpoint

    IoTBackend.describe_endpoint = describe_endpoint  # type: ignore[method-assign]


def _delete_connection() -> None:
    """Gap (moto 5.2): moto's iot-data has no DeleteConnection (``NotImplementedError``). It has
    no MQTT clients either, so no client is ever connected there: answer as AWS answers for a
    client id with no connection, ResourceNotFoundException (404). The offline stack serves
    DeleteConnection itself, against its broker (devstack/iot/iot_data.py); this bridge is for
    in-process moto."""
    from moto.core.exceptions import JsonRESTError
    from moto.iotdata.responses import IoTDataPlaneResponse

    class NoConnection(JsonRESTError):
        code = 404

    def delete_connection(self: Any) -> str:
        raise NoConnection("ResourceNotFoundException", "No connection for this client id")

    IoTDataPlaneResponse.delete_connection = delete_connection  # type: ignore[attr-defined]


# The alias attributes a user pool may declare, and the attribute that must be "true" for the
# alias to sign in (Cognito: an email or phone alias works once it is verified).
ALIAS_VERIFIED_BY = {"email": "email_verified", "phone_number": "phone_number_verified"}


def _sign_in_by_alias() -> None:
    """Gap (moto 5.2): moto finds a user by its username or the pool's UsernameAttributes, but
    not by an alias (AliasAttributes), so signing in with a user's verified email fails offline
    (UserNotFoundException) where AWS signs the user in. Look the alias up when the username is
    not one; an unverified email or phone number is no alias, as in AWS."""
    from moto.cognitoidp.models import CognitoIdpUserPool
    from moto.cognitoidp.utils import flatten_attrs

    find_user = CognitoIdpUserPool._get_user

    def get_user(self: Any, username: str) -> Any:
        found = find_user(self, username)
        if found is not None:
            return found
        for alias in self.extended_config.get("AliasAttributes") or ():
            for user in self.users.values():
                attributes = flatten_attrs(user.attributes)
                verified = ALIAS_VERIFIED_BY.get(alias)
                if attributes.get(alias) == username and (
                    verified is None or attributes.get(verified) == "true"
                ):
                    return user
        return None

    CognitoIdpUserPool._get_user = get_user  # type: ignore[method-assign]

    # The tokens name the user by her username whatever she typed (AWS's cognito:username and
    # access-token username are the username, never the alias): moto writes what it was given.
    create_jwt = CognitoIdpUserPool.create_jwt

    def create_jwt_for_username(
        self: Any, client_id: str, username: str, *args: Any, **kw: Any
    ) -> Any:
        user = get_user(self, username)
        if user is not None and "email" not in self.extended_config.get("UsernameAttributes", []):
            username = user.username
        return create_jwt(self, client_id, username, *args, **kw)

    CognitoIdpUserPool.create_jwt = create_jwt_for_username  # type: ignore[method-assign]


SHORT_LIVED_MAX = datetime.timedelta(days=7)
_issuing = threading.local()  # the validity of the IssueCertificate being handled


def _usage_mode_and_validity() -> None:
    """Gap (moto 5.2): moto's ACM PCA ignores CreateCertificateAuthority's UsageMode (every CA
    reports SHORT_LIVED_CERTIFICATE) and IssueCertificate's Validity (every certificate is
    valid for 365 days). AWS keeps the mode given (GENERAL_PURPOSE when none is), issues for
    the validity asked, and a CA in SHORT_LIVED_CERTIFICATE mode refuses an end-entity
    certificate valid for more than 7 days
    (https://docs.aws.amazon.com/privateca/latest/userguide/short-lived-certificates.html; it
    does not check CA certificates). Gap (moto 5.2): moto signs certificates that outlive the
    CA signing them; AWS refuses any ("The end date of the signing CA certificate must exceed
    the end date of the requested certificate", ACM's private-certificate docs), a device
    certificate as an issuing CA's. Bridged here so that an over-long validity fails offline as
    in AWS, and certificates expire when the template says.
    """
    from moto.acmpca.models import CertificateAuthority
    from moto.acmpca.responses import ACMPCAResponse
    from moto.core.exceptions import JsonRESTError

    create_ca = ACMPCAResponse.create_certificate_authority
    issue = ACMPCAResponse.issue_certificate
    generate_cert = CertificateAuthority.generate_cert

    def create_certificate_authority(self: Any) -> str:
        mode = json.loads(self.body).get("UsageMode") or "GENERAL_PURPOSE"
        answer: str = create_ca(self)
        arn = json.loads(answer)["CertificateAuthorityArn"]
        self.acmpca_backend.certificate_authorities[arn].usage_mode = mode
        return answer

    def issue_certificate(self: Any) -> str:
        params = json.loads(self.body)
        now = datetime.datetime.now(datetime.UTC)
        not_after = _validity_end(params.get("Validity") or {}, now)
        ca = self.acmpca_backend.certificate_authorities.get(params.get("CertificateAuthorityArn"))
        is_ca_certificate = "CACertificate" in str(params.get("TemplateArn", ""))
        if (
            ca is not None
            and ca.usage_mode == "SHORT_LIVED_CERTIFICATE"
            and not is_ca_certificate
            and not_after is not None
            and not_after - now > SHORT_LIVED_MAX
        ):
            raise JsonRESTError(
                "ValidationException",
                "A certificate authority in SHORT_LIVED_CERTIFICATE mode issues certificates "
                "valid for at most 7 days.",
            )
        signer = ca.certificate if ca is not None else None
        if signer is not None and not_after is not None and not_after > signer.not_valid_after_utc:
            raise JsonRESTError(
                "ValidationException",
                "The certificate validity specified exceeds the certificate authority validity.",
            )
        # Shorter still for a device certificate when `up --cert-lifetime` asked (lifetime.py).
        purpose = END_ENTITY_TEMPLATES.get(str(params.get("TemplateArn")).split(":", 2)[-1])
        _issuing.not_after = lifetime.not_after(not_after, now, purpose)
        try:
            answer: str = issue(self)
        finally:
            _issuing.not_after = None
        return answer

    def generate_with_validity(
        self: Any,
        subject: x509.Name,
        public_key: Any,
        extensions: list[tuple[x509.ExtensionType, bool]],
    ) -> bytes:
        not_after = getattr(_issuing, "not_after", None)
        if not_after is None:
            return bytes(generate_cert(self, subject, public_key, extensions))
        # moto's own certificate, with the validity asked for.
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime.now(datetime.UTC))
            .not_valid_after(not_after)
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(self.key, hashes.SHA512()).public_bytes(serialization.Encoding.PEM)

    ACMPCAResponse.create_certificate_authority = create_certificate_authority  # type: ignore[method-assign]
    ACMPCAResponse.issue_certificate = issue_certificate  # type: ignore[method-assign]
    CertificateAuthority.generate_cert = generate_with_validity  # type: ignore[method-assign]


def _validity_end(validity: dict[str, Any], now: datetime.datetime) -> datetime.datetime | None:
    """The notAfter an IssueCertificate Validity asks for (None: none asked)."""
    kind, value = validity.get("Type"), validity.get("Value")
    if kind is None or value is None:
        return None
    value = int(value)
    if kind == "DAYS":
        return now + datetime.timedelta(days=value)
    if kind == "MONTHS":
        months = now.month - 1 + value
        day = min(now.day, 28)
        return now.replace(year=now.year + months // 12, month=months % 12 + 1, day=day)
    if kind == "YEARS":
        return now.replace(year=now.year + value, day=min(now.day, 28))
    if kind == "ABSOLUTE":
        return datetime.datetime.fromtimestamp(value, datetime.UTC)
    if kind == "END_DATE":
        return datetime.datetime.strptime(str(value), "%Y%m%d%H%M%S").replace(tzinfo=datetime.UTC)
    return None


def _certificate_id_is_der_sha256() -> None:
    """Gap (moto 5.2): moto names an IoT certificate by the SHA-256 of its PEM text unless
    its "iot.use_valid_cert" option is on; AWS names it by the SHA-256 of its DER. The
    provisioning function computes the id before registering (to write its intent first), so
    the id must be AWS's.
    """
    from moto.iot.models import FakeCertificate

    FakeCertificate.compute_cert_id = FakeCertificate.compute_der_cert_id  # type: ignore[method-assign]


def _revoked_is_terminal() -> None:
    """Gap (moto 5.2): moto's IoT UpdateCertificate sets any status on any certificate. In AWS a
    REVOKED certificate cannot change status again (CertificateStateException), which matters
    to rotation and revocation when an operator has already revoked a certificate by hand.
    """
    from moto.iot.exceptions import CertificateStateException
    from moto.iot.models import IoTBackend

    original = IoTBackend.update_certificate

    def update_certificate(self: Any, certificate_id: str, new_status: str) -> None:
        certificate = self.describe_certificate(certificate_id)
        if certificate.status == "REVOKED" and new_status != "REVOKED":
            raise CertificateStateException(
                "A revoked certificate cannot change status.", certificate_id
            )
        original(self, certificate_id, new_status)

    IoTBackend.update_certificate = update_certificate  # type: ignore[method-assign]


def _atomic_dynamodb_requests() -> None:
    """Gap (moto 5.2): moto's DynamoDB reads the old item (for ReturnValues and conditions),
    then checks the condition and writes, with no lock, so two concurrent conditional writes
    can both pass or return a stale old item. DynamoDB makes each conditional write and each
    transaction atomic, and the provisioning lease relies on that. One lock around the whole
    handling of each item request restores it (moto's server answers on several threads).
    """
    import functools
    import threading

    from moto.dynamodb.responses import DynamoHandler

    lock = threading.RLock()
    for name in (
        "put_item",
        "update_item",
        "delete_item",
        "get_item",
        "batch_get_item",
        "batch_write_item",
        "transact_get_items",
        "transact_write_items",
        "execute_statement",
        "execute_transaction",
    ):
        original = getattr(DynamoHandler, name)

        @functools.wraps(original)
        def locked(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return __original(self, *args, **kwargs)

        setattr(DynamoHandler, name, locked)


def _client_auth_template() -> None:
    """Patch moto's ACM PCA so the end-entity templates the product uses issue AWS's profile.

    Gap (moto 5.2): moto knows only the RootCACertificate and EndEntityCertificate templates and
    issues a certificate with no extensions but the CSR's SAN for any other template ARN. AWS
    documents EndEntityClientAuthCertificate/V1 (device certificates) and
    EndEntityServerAuthCertificate/V1 (the IoT verification certificate) as
    (https://docs.aws.amazon.com/privateca/latest/userguide/template-definitions.html):

    | X509v3 parameter         | value                                                  |
    | subject alternative name | passthrough from CSR                                   |
    | subject                  | passthrough from CSR                                   |
    | basic constraints        | CA:FALSE                                               |
    | authority key identifier | SKI from CA certificate                                |
    | subject key identifier   | derived from CSR                                       |
    | key usage                | critical, digital signature, key encipherment          |
    | extended key usage       | TLS web client (or server) authentication, only        |

    The table marks only key usage critical, so basicConstraints is issued non-critical here.
    No CRL distribution point: the product's CA has no CRL configured. moto still signs with its
    own RSA key whatever the CA's KeyAlgorithm (a known gap, left).
    """
    from moto.acmpca.models import CertificateAuthority

    original = CertificateAuthority._x509_extensions

    def extensions(
        self: Any, csr: x509.CertificateSigningRequest, template_arn: str | None
    ) -> list[tuple[x509.ExtensionType, bool]]:
        purpose = END_ENTITY_TEMPLATES.get(str(template_arn).split(":", 2)[-1])
        if purpose is None:
            return list(original(self, csr, template_arn))
        profile: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), False),
            # The CA certificate's key, not self.key: moto decrypts and re-validates its RSA
            # key on every access, tens of milliseconds each.
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(_ca_public_key(self)), False),
            (x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), False),
            (_key_usage(signs_certificates=False), True),
            (x509.ExtendedKeyUsage([purpose]), False),
        ]
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return profile
        return [*profile, (san.value, san.critical)]

    CertificateAuthority._x509_extensions = extensions  # type: ignore[method-assign]


SUBORDINATE_PATH_LEN_0 = "acm-pca:::template/SubordinateCACertificate_PathLen0/V1"


def _subordinate_ca_template() -> None:
    """Patch moto's ACM PCA so a root can sign an issuing CA, and what it issues chains to root.

    Gap (moto 5.2): SubordinateCACertificate_PathLen0/V1 is unknown to moto, which issues a
    certificate with no extensions for it: not a CA, so nothing it signs validates. AWS
    documents the template as
    (https://docs.aws.amazon.com/privateca/latest/userguide/template-definitions.html):

    | X509v3 parameter         | value                                                  |
    | subject                  | passthrough from CSR                                   |
    | basic constraints        | critical, CA:TRUE, pathlen:0                           |
    | authority key identifier | SKI from CA certificate                                |
    | subject key identifier   | derived from CSR                                       |
    | key usage                | critical, digital signature, keyCertSign, CRL sign     |

    Gap (moto 5.2): GetCertificate answers a certificate's chain as its issuing CA's certificate
    alone. AWS answers the chain up to the root: the issuing CA's certificate, then the chain
    that CA was activated with (ImportCertificateAuthorityCertificate's CertificateChain).
    """
    from moto.acmpca.models import CertificateAuthority

    extensions_of = CertificateAuthority._x509_extensions
    get_certificate = CertificateAuthority.get_certificate

    def extensions(
        self: Any, csr: x509.CertificateSigningRequest, template_arn: str | None
    ) -> list[tuple[x509.ExtensionType, bool]]:
        if str(template_arn).split(":", 2)[-1] != SUBORDINATE_PATH_LEN_0:
            return list(extensions_of(self, csr, template_arn))
        return [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(_ca_public_key(self)), False),
            (x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), False),
            (_key_usage(signs_certificates=True), True),
        ]

    def get_certificate_with_chain(self: Any, certificate_arn: str) -> tuple[bytes, bytes]:
        certificate, chain = get_certificate(self, certificate_arn)
        if chain and self.certificate_chain:
            chain = chain.rstrip(b"\n") + b"\n" + _activation_chain(self.certificate_chain)
        return certificate, chain

    CertificateAuthority._x509_extensions = extensions  # type: ignore[method-assign]
    CertificateAuthority.get_certificate = get_certificate_with_chain  # type: ignore[method-assign]


def _activation_chain(stored: bytes | str) -> bytes:
    """The PEM chain a CA was activated with: moto keeps ImportCertificateAuthorityCertificate's
    CertificateChain as the request carried it (base64 of the PEM)."""
    import base64
    import binascii

    if isinstance(stored, bytes):
        return stored
    try:
        return base64.b64decode(stored, validate=True)
    except (binascii.Error, ValueError):
        return stored.encode()


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """AWS's key usage: digital signature, and key encipherment for an end entity, or
    certificate and CRL signing for a CA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not signs_certificates,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


# ASN1Subject members, in the order they are written to the issued subject here.
_ASN1_SUBJECT = (
    ("Country", NameOID.COUNTRY_NAME),
    ("State", NameOID.STATE_OR_PROVINCE_NAME),
    ("Locality", NameOID.LOCALITY_NAME),
    ("Organization", NameOID.ORGANIZATION_NAME),
    ("OrganizationalUnit", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("DistinguishedNameQualifier", NameOID.DN_QUALIFIER),
    ("SerialNumber", NameOID.SERIAL_NUMBER),
    ("Title", NameOID.TITLE),
    ("Surname", NameOID.SURNAME),
    ("GivenName", NameOID.GIVEN_NAME),
    ("Initials", NameOID.INITIALS),
    ("Pseudonym", NameOID.PSEUDONYM),
    ("GenerationQualifier", NameOID.GENERATION_QUALIFIER),
    ("CommonName", NameOID.COMMON_NAME),
)


def _api_passthrough() -> None:
    """Gap (moto 5.2): moto's IssueCertificate ignores ApiPassthrough (its docstring says so)
    and always copies the CSR's subject and SAN. AWS, with an APIPassthrough template
    (https://docs.aws.amazon.com/privateca/latest/userguide/template-order-of-operations.html):
    the template definition first, then API passthrough values, then (CSRPassthrough varieties
    only) CSR extensions. So for EndEntityClientAuthCertificate_APIPassthrough/V1 the
    ApiPassthrough Subject replaces the CSR's subject, its SubjectAlternativeNames replace the
    CSR's SAN, and no other CSR extension reaches the certificate. With any other template
    ApiPassthrough is ignored, as AWS does. Only the Subject and URI/DNS SANs the product uses
    are bridged.
    """
    import json

    from moto.acmpca.models import CertificateAuthority
    from moto.acmpca.responses import ACMPCAResponse

    original_issue = CertificateAuthority.issue_certificate

    def issue_certificate(self: Any) -> str:
        params = json.loads(self.body)
        ca = self.acmpca_backend.describe_certificate_authority(
            params.get("CertificateAuthorityArn")
        )
        template_arn = params.get("TemplateArn")
        passthrough = params.get("ApiPassthrough") or {}
        csr = params.get("Csr").encode("utf-8")
        if "_APIPassthrough/" in str(template_arn) or "_APICSRPassthrough/" in str(template_arn):
            arn = _issue_with_passthrough(ca, csr, template_arn, passthrough)
        else:
            arn = original_issue(ca, csr, template_arn)
        return json.dumps({"CertificateArn": arn})

    ACMPCAResponse.issue_certificate = issue_certificate  # type: ignore[method-assign]


def _issue_with_passthrough(
    ca: Any, csr_bytes: bytes, template_arn: str, passthrough: dict[str, Any]
) -> str:
    import base64

    csr = x509.load_pem_x509_csr(base64.b64decode(csr_bytes))
    subject = csr.subject
    given = passthrough.get("Subject") or {}
    if given:
        subject = x509.Name(
            [x509.NameAttribute(oid, str(given[key])) for key, oid in _ASN1_SUBJECT if key in given]
        )
    extensions = [
        (value, critical)
        for value, critical in ca._x509_extensions(csr, template_arn)
        if not isinstance(value, x509.SubjectAlternativeName)
    ]
    names = (passthrough.get("Extensions") or {}).get("SubjectAlternativeNames")
    if names:
        general: list[x509.GeneralName] = []
        for name in names:
            if "UniformResourceIdentifier" in name:
                general.append(x509.UniformResourceIdentifier(name["UniformResourceIdentifier"]))
            if "DnsName" in name:
                general.append(x509.DNSName(name["DnsName"]))
        extensions.append((x509.SubjectAlternativeName(general), False))
    else:
        try:  # no SAN given: the template passes the CSR's through
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            extensions.append((san.value, san.critical))
        except x509.ExtensionNotFound:
            pass
    certificate = ca.generate_cert(
        subject=subject, public_key=csr.public_key(), extensions=extensions
    )
    # Stored as moto's own issue_certificate stores it.
    from moto.moto_api._internal import mock_random
    from moto.utilities.utils import get_partition

    certificate_id = str(mock_random.uuid4()).replace("-", "")
    arn = (
        f"arn:{get_partition(ca.region_name)}:acm-pca:{ca.region_name}:{ca.account_id}:"
        f"certificate-authority/{ca.id}/certificate/{certificate_id}"
    )
    ca.issued_certificates[arn] = certificate
    ca.issued_certificates_certificate_chains[arn] = ca.certificate_bytes
    return arn


def _ca_public_key(ca: Any) -> Any:
    certificate = ca.certificate
    return certificate.public_key() if certificate is not None else ca.key.public_key()
