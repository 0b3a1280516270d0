"""Typed request, caller and result models, with the API's full input validation."""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provisioning.domain.challenge import parse_challenge
from provisioning.domain.errors import BadRequest, ProvisioningError

# Room for a CSR of an RSA-4096 key (its PEM, JSON-escaped) besides the other fields.
MAX_BODY_BYTES = 8192
# A CSR's PEM text, at most (crypto.MAX_CSR_BYTES; template.yaml's model says the same).
MAX_CSR_CHARS = 6144
DSN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,115}", re.ASCII)
MAX_DSN_LENGTH = 115  # 128 (IoT's thing-name limit) - 12 (ThingPrefix at most) - 1 ("_")
_DSN_CHARACTERS = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
# The first is the default: what the original sample's devices understand.
ENCRYPTION_SCHEMES = ("fernet-x25519", "x25519-hkdf-sha256-aes256gcm")
ALLOWED_FIELDS = frozenset(
    {"DSN", "publicKey", "csr", "encryption", "attestation", "attestationChallenge"}
)

ADMINISTRATORS = "Administrators"
MEMBERS = "Members"


# A DER ECDSA P-256 signature is at most 72 bytes; base64 of that is 96 characters.
MAX_SIGNATURE_BYTES = 72
MAX_SIGNATURE_TEXT = 96


def parse_signature(text: str) -> bytes:
    """The request's ``attestation``: standard base64 of a DER signature (shape only)."""
    if len(text) > MAX_SIGNATURE_TEXT:
        raise BadRequest("attestation is too long for an ECDSA P-256 signature.", "FIELD_TYPE")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("attestation is not valid base64.", "ATTESTATION_MALFORMED") from None
    if not 8 <= len(raw) <= MAX_SIGNATURE_BYTES:
        raise BadRequest(
            "attestation must be the base64 of a DER ECDSA P-256 signature.",
            "ATTESTATION_MALFORMED",
        )
    return raw


@dataclass(frozen=True)
class ProvisionRequest:
    """publicKey mode (``device_public_key``: the server makes the key and seals it to the
    device) or CSR mode (``csr_pem``: the device keeps its key; the answer carries none)."""

    dsn: str
    device_public_key: bytes = b""
    encryption: str = "fernet-x25519"
    csr_pem: bytes = b""
    # The device's DER ECDSA signature (attestation.py); None when the request has none.
    attestation: bytes | None = None
    # The challenge the signature covers (challenge.py): 32 bytes whenever there is one.
    attestation_challenge: bytes = b""

    @property
    def csr_mode(self) -> bool:
        return bool(self.csr_pem)


def parse_provision_request(body: str | None, *, base64_encoded: bool = False) -> ProvisionRequest:
    """Validate the whole body; raise BadRequest with a stable code on the first problem.

    Any body API Gateway can deliver (any content type, size, depth or encoding) ends here as
    a request or a BadRequest, never as another exception.
    """
    data = _json_object(_body_text(body, base64_encoded))
    unknown = sorted(set(data) - ALLOWED_FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field: {unknown[0][:40]!r}.", "UNKNOWN_FIELD")

    dsn = check_dsn(_required_string(data, "DSN"))

    attestation = None
    challenge = b""
    if data.get("attestation") is not None:
        attestation = parse_signature(_required_string(data, "attestation"))
        if data.get("attestationChallenge") is None:
            raise BadRequest(
                "attestation needs the attestationChallenge it signs.", "CHALLENGE_MISSING"
            )
    if data.get("attestationChallenge") is not None:
        if attestation is None:
            raise BadRequest(
                "attestationChallenge comes with the attestation that signs it.",
                "ATTESTATION_MISSING",
            )
        challenge = parse_challenge(_required_string(data, "attestationChallenge"))

    if "publicKey" in data and "csr" in data:
        raise BadRequest("Give publicKey or csr, not both.", "KEY_FIELDS_CONFLICT")
    if "csr" in data:
        if "encryption" in data:
            raise BadRequest(
                "encryption applies to publicKey mode only: in csr mode no key is sent.",
                "ENCRYPTION_NOT_APPLICABLE",
            )
        csr = _required_string(data, "csr")
        if not csr or len(csr) > MAX_CSR_CHARS or not csr.isascii():
            raise BadRequest(
                f"csr must be a PEM certificate request of at most {MAX_CSR_CHARS} characters.",
                "CSR_INVALID",
            )
        return ProvisionRequest(
            dsn=dsn,
            csr_pem=csr.encode("ascii"),
            attestation=attestation,
            attestation_challenge=challenge,
        )

    encoded = _required_string(data, "publicKey")
    try:
        public_key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("publicKey is not valid base64.", "PUBLIC_KEY_INVALID") from None
    if len(public_key) != 32:
        raise BadRequest(
            "publicKey must be the base64 of a 32-byte X25519 public key.", "PUBLIC_KEY_INVALID"
        )

    encryption = data.get("encryption", ENCRYPTION_SCHEMES[0])
    if encryption not in ENCRYPTION_SCHEMES:
        raise BadRequest(
            f"encryption must be one of: {', '.join(ENCRYPTION_SCHEMES)}.", "ENCRYPTION_INVALID"
        )
    return ProvisionRequest(
        dsn=dsn,
        device_public_key=public_key,
        encryption=encryption,
        attestation=attestation,
        attestation_challenge=challenge,
    )


def parse_challenge_request(body: str | None, *, base64_encoded: bool = False) -> str:
    """POST /certificate/challenge's body, ``{"DSN"}``: the DSN, or BadRequest."""
    data = _json_object(_body_text(body, base64_encoded))
    unknown = sorted(set(data) - {"DSN"})
    if unknown:
        raise BadRequest(f"Unknown field: {unknown[0][:40]!r}.", "UNKNOWN_FIELD")
    return check_dsn(_required_string(data, "DSN"))


def _body_text(body: object, base64_encoded: bool, limit: int = MAX_BODY_BYTES) -> str:
    """The body as text, at most ``limit`` bytes of UTF-8 once decoded."""
    if body is None or (isinstance(body, str) and not body.strip()):
        raise BadRequest("The request body is missing.", "BODY_MISSING")
    if not isinstance(body, str):
        raise BadRequest("The request body is not valid JSON.", "BODY_NOT_JSON")
    if not base64_encoded:
        if len(body.encode("utf-8", "surrogatepass")) > limit:
            raise BadRequest("The request body is too large.", "BODY_TOO_LARGE")
        return body
    # Only with binary media types on the API; decoded here, strictly, as API Gateway encoded it.
    if len(body) > (limit + 2) // 3 * 4 + 4:
        raise BadRequest("The request body is too large.", "BODY_TOO_LARGE")
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("The request body is not valid base64.", "BODY_NOT_JSON") from None
    if len(raw) > limit:
        raise BadRequest("The request body is too large.", "BODY_TOO_LARGE")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The request body is not UTF-8 text.", "BODY_NOT_JSON") from None
    if not text.strip():
        raise BadRequest("The request body is missing.", "BODY_MISSING")
    return text


def _json_object(text: str) -> dict[str, Any]:
    """Strict JSON: no NaN or Infinity, no repeated field, an object at the top."""
    try:
        data: Any = json.loads(
            text, object_pairs_hook=_unique_fields, parse_constant=_not_json_constant
        )
    except RecursionError:
        raise BadRequest("The request body is nested too deeply.", "BODY_TOO_DEEP") from None
    except ValueError:
        raise BadRequest("The request body is not valid JSON.", "BODY_NOT_JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.", "BODY_NOT_OBJECT")
    return data


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated field would be read one way by the model validator and another way here.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise BadRequest("A field appears more than once in the body.", "DUPLICATE_FIELD")
    return result


def _not_json_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON.", "BODY_NOT_JSON")


def check_dsn(dsn: str) -> str:
    """The one DSN rule, for bodies and paths alike: DSN_INVALID for an empty DSN or a character
    outside A-Z a-z 0-9 _ -, DSN_TOO_LONG for a well-formed DSN longer than any thing name
    (``<ThingPrefix>_<DSN>``, at most 128 characters, a prefix up to 12) allows: 115."""
    if not _DSN_CHARACTERS.fullmatch(dsn):
        raise BadRequest(
            "DSN must be 1-115 characters of A-Z, a-z, 0-9, '_' or '-'.", "DSN_INVALID"
        )
    if len(dsn) > MAX_DSN_LENGTH:
        raise BadRequest(
            f"DSN is too long: the thing name allows at most {MAX_DSN_LENGTH} characters.",
            "DSN_TOO_LONG",
        )
    return dsn


def parse_dsn(raw: str | None) -> str:
    """A DSN from a path parameter, held to the same rule as the request body's."""
    if raw is None:
        raise BadRequest(
            "DSN must be 1-115 characters of A-Z, a-z, 0-9, '_' or '-'.", "DSN_INVALID"
        )
    return check_dsn(raw)


def _required_string(data: Mapping[str, Any], field: str) -> str:
    if field not in data or data[field] is None:
        raise BadRequest(f"{field} is required.", "FIELD_MISSING")
    value = data[field]
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string.", "FIELD_TYPE")
    return value


# ---------------------------------------------------------------------------- principals
# Who acts on a device, as types: a person (User), the device itself (Device), or the service
# (System). Each is authorised for what it may do; none poses as another.


@dataclass(frozen=True)
class User:
    """A person, from the claims the Cognito authorizer verified: a member acts on the devices
    they own; an administrator on any device."""

    sub: str
    groups: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMINISTRATORS in self.groups

    @property
    def acts_on_any_device(self) -> bool:
        return self.is_admin

    @property
    def may_provision(self) -> bool:
        return self.is_admin or MEMBERS in self.groups

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any] | None) -> User:
        claims = claims or {}
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            # Only reachable if the route is deployed without the authorizer.
            from provisioning.domain.errors import Forbidden

            raise Forbidden("The caller has no verified identity.", "NO_IDENTITY")
        return cls(sub=sub, groups=_parse_groups(claims.get("cognito:groups")))


@dataclass(frozen=True)
class Device:
    """A device, authenticated by IoT Core with its certificate (renewal over MQTT). It acts on
    its own row only: the DSN is read from its thing name, and the row must name that thing
    and the certificate it published with (usecases/renew.py)."""

    thing_name: str

    @property
    def sub(self) -> str:  # how the audit trail names it
        return f"thing:{self.thing_name}"

    acts_on_any_device = True  # no owner check: it is not anybody's account


@dataclass(frozen=True)
class System:
    """The service itself, finishing what requests left (the sweeper)."""

    name: str

    @property
    def sub(self) -> str:
        return self.name

    acts_on_any_device = True


Principal = User | Device | System


def _parse_groups(raw: Any) -> frozenset[str]:
    """API Gateway flattens the groups claim to a string: "A,B" or "[A B]"; accept a list too."""
    if raw is None:
        return frozenset()
    if isinstance(raw, list | tuple):
        return frozenset(str(group) for group in raw)
    text = str(raw).strip().removeprefix("[").removesuffix("]")
    return frozenset(part for part in re.split(r"[,\s]+", text) if part)


@dataclass(frozen=True)
class ProvisionResult:
    """In CSR mode there is no key to seal: the three key fields are empty and not answered."""

    certificate_pem: str
    encrypted_private_key: str
    server_public_key: str
    thing_name: str
    certificate_id: str
    not_after: str
    iot_endpoint: str
    encryption: str
    certificate_chain_pem: str = ""  # the issuing CA's certificate, then up to the root

    def to_response(self) -> dict[str, str]:
        answer = {
            "certificatePem": self.certificate_pem,
            "thingName": self.thing_name,
            "certificateId": self.certificate_id,
            "notAfter": self.not_after,
            "iotEndpoint": self.iot_endpoint,
        }
        if self.certificate_chain_pem:
            answer["certificateChainPem"] = self.certificate_chain_pem
        if self.encrypted_private_key:
            answer |= {
                "encryptedPrivateKey": self.encrypted_private_key,
                "publicKey": self.server_public_key,
                "encryption": self.encryption,
            }
        return answer


# An ACM PCA certificate's ARN is its issuing CA's ARN followed by "/certificate/<id>".
_PCA_CERTIFICATE_ARN = re.compile(
    r"(arn:[\w-]+:acm-pca:[\w-]+:\d{12}:certificate-authority/[\w-]+)/certificate/[\w-]+",
    re.ASCII,
)


def issuer_of(pca_certificate_arn: str) -> str:
    """The ARN of the CA that issued a certificate, read from the certificate's own ARN ("" for
    anything that is not an ACM PCA certificate ARN)."""
    match = _PCA_CERTIFICATE_ARN.fullmatch(pca_certificate_arn)
    return match.group(1) if match else ""


@dataclass(frozen=True)
class CommitGuard:
    """One more item a commit's transaction checks or writes, and the refusal to raise when its
    condition alone fails. The item is the adapter's (a TransactWriteItems entry), opaque to
    everything between the adapter that builds it and the store that sends it."""

    item: Any
    refusal: ProvisioningError


@dataclass(frozen=True)
class CertificateRef:
    """Enough to find a certificate again in IoT and in ACM PCA.

    ``issuer_arn`` is the CA that issued it: revocation in ACM PCA is a call on that CA, which
    after a CA change is not the one the functions issue from. Empty only for records written
    before the issuer was kept; those are revoked at the configured CA.
    """

    certificate_id: str
    certificate_arn: str
    serial: str
    issuer_arn: str = ""


@dataclass(frozen=True)
class Intent:
    """What a request is about to do to IoT, written to the device row before it does it.

    ``pca_certificate_arn`` is the new certificate as ACM PCA issued it: whoever resolves the
    intent fetches it there and derives its IoT id (the SHA-256 of its DER) and serial, so the
    intent can be written while the certificate is still being issued. ``certificate`` is that
    derivation once known (in memory only). ``previous_certificate_id`` names the current
    certificate when the request is about to set it INACTIVE (a rotation). While the row
    carries an intent, the certificate it names is not the device's: whoever resolves the
    intent revokes it and makes the row's own certificate ACTIVE again. A commit removes the
    intent in the same write that names the new certificate, so an intent never outlives a
    commit that applied.
    """

    request_id: str
    pca_certificate_arn: str
    previous_certificate_id: str = ""
    certificate: CertificateRef | None = None


@dataclass(frozen=True)
class DeviceRecord:
    """A row of the devices table. `certificate_id` is set only once provisioning succeeded.

    ``retiring`` holds certificates the device no longer uses that must still end REVOKED in
    IoT, detached, and revoked in ACM PCA (replaced, rolled back or revoked ones); each stays
    until that is done. ``intent`` and the lease belong to the request in flight (or to one that
    died, once ``lease_until`` has passed).

    ``superseded`` is, during a renewal only, the certificate the device renewed from: still
    ACTIVE and attached until the device confirms with the new one or ``grace_until`` (epoch
    seconds) passes. Meanwhile the row stays in the sweep index with ``lease_until`` at the
    grace deadline, so the sweeper retires it then.
    """

    dsn: str
    owner_sub: str
    thing_name: str = ""
    certificate_id: str = ""
    certificate_arn: str = ""
    pca_certificate_arn: str = ""
    serial: str = ""
    not_before: str = ""
    not_after: str = ""
    key_algorithm: str = ""
    status: str = ""  # a DeviceStatus, or "" before the first commit
    created_at: str = ""
    updated_at: str = ""
    lease_request_id: str = ""
    lease_until: int = 0
    intent: Intent | None = None
    retiring: tuple[CertificateRef, ...] = ()
    superseded: CertificateRef | None = None
    grace_until: int = 0
    # The CA that issued the certificate the row names (see CertificateRef.issuer_arn).
    issuer_arn: str = ""
    # Sweeps that ended with work left since the row was last settled; at MAX_SWEEP_ATTEMPTS
    # the row is parked (lease.py).
    sweep_attempts: int = 0

    @property
    def wake_at(self) -> int:
        """When the sweeper must look at the row again though no request holds it (0: never)."""
        return self.grace_until if self.superseded is not None else 0

    def grace_over(self, now: int) -> bool:
        return self.superseded is not None and now >= self.grace_until

    # A release not finished: the thing still to take out of the fleet's thing group before
    # the row goes (fleet.py). Any commit writes it empty.
    ungroup: str = ""
    # Who released the device, while that release is not finished: they may repeat it (the
    # row names no owner any more). Any commit writes it empty, as ``ungroup``.
    released_by: str = ""

    @property
    def certificate(self) -> CertificateRef | None:
        if not self.certificate_id:
            return None
        return CertificateRef(
            self.certificate_id,
            self.certificate_arn,
            self.serial,
            self.issuer_arn or issuer_of(self.pca_certificate_arn),
        )

    @property
    def held_certificates(self) -> tuple[CertificateRef, ...]:
        """Every certificate the row lets the owner's device use: the current one (confirmed
        or not) and, inside a renewal's window, the one it renewed from. Ending the device's
        access retires all of them (lease.py, ``DeviceTask.end_access``)."""
        return tuple(ref for ref in (self.certificate, self.superseded) if ref is not None)

    @property
    def needs_recovery(self) -> bool:
        return self.intent is not None or bool(self.retiring) or bool(self.ungroup)

    def visible_to(self, caller: User) -> bool:
        return caller.is_admin or self.owner_sub == caller.sub

    @property
    def releasing(self) -> bool:
        """A release whose row write applied and whose clean-up has not finished yet."""
        return not self.status and bool(self.ungroup)


class DeviceStatus(enum.StrEnum):
    """A device row's status ("" before its first provisioning commits)."""

    ACTIVE = "ACTIVE"  # the row names the certificate the device uses
    REVOKED = "REVOKED"  # the row names none: revoked, blocked or taken back by a claim


class CertificateStatus(enum.StrEnum):
    """A certificate's status in IoT Core."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"  # a rotation's previous certificate, until the commit
    REVOKED = "REVOKED"


class Release(enum.Enum):
    """What a settling write does with the device's lease."""

    KEEP = "keep"  # recovery before the request goes on
    RELEASE = "release"  # the request is over; the row stays
    DELETE = "delete"  # the request is over; a row never provisioned is dropped


@dataclass(frozen=True)
class AuditEvent:
    """One use of the CA: who did what, when, to which certificate."""

    subject: str
    event: str
    actor: str
    at: str
    request_id: str
    details: Mapping[str, str]


@dataclass(frozen=True)
class CertificateNames:
    """The subject and SAN URI the service gives every device certificate (ApiPassthrough)."""

    common_name: str
    organization: str = ""
    organizational_unit: str = ""
    country: str = ""
    san_uri: str = ""


@dataclass(frozen=True)
class ExpiringDevice:
    """A device the expiry index lists: its certificate's notAfter (ISO-8601 UTC)."""

    dsn: str
    thing_name: str
    not_after: str


@dataclass(frozen=True)
class ExpiringPage:
    devices: tuple[ExpiringDevice, ...]
    cursor: object  # where the next page starts (opaque to the domain); None: no more


@dataclass(frozen=True)
class IssuedCertificate:
    certificate_pem: str
    chain_pem: str


@dataclass(frozen=True)
class RegisteredCertificate:
    certificate_id: str
    certificate_arn: str
