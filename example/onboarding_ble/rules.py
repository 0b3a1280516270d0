"""The rules the device, the phone app and the API must agree on, defined once for the example.

The encryption scheme names (and the HKDF label of the stronger scheme), the DSN rule, and how a
certificate names its device (a SAN URI with the DSN; the thing name ``<ThingPrefix>_<DSN>`` as
its common name).
The example owns this module: a device cannot ship Lambda code, and the Lambda's package
(its CodeUri) cannot import the example, so the provisioning function keeps its own
definitions (``provisioning/domain/models.py``: ``ENCRYPTION_SCHEMES``, ``DSN_PATTERN``;
``provisioning/domain/crypto.py``: ``HKDF_LABEL``, ``DSN_URI_PREFIX``, ``common_name_for``,
``is_canonical_x25519``; ``provisioning/config.py``: ``THING_PREFIX_PATTERN``;
``provisioning/domain/attestation.py``: ``MESSAGE_PREFIX``, ``message``;
``provisioning/domain/challenge.py``: ``CHALLENGE_BYTES``).
``tests/unit/test_shared_rules.py`` fails as soon as the two disagree, and checks the API model
and the ThingPrefix parameter in template.yaml against the same rules.
"""

from __future__ import annotations

import hashlib
import re

FERNET_X25519 = "fernet-x25519"  # the original sample's scheme: every device understands it
HKDF_AES_GCM = "x25519-hkdf-sha256-aes256gcm"  # binds the key to the DSN; opt-in
ENCRYPTION_SCHEMES = (FERNET_X25519, HKDF_AES_GCM)  # the first is the API's default
ENCRYPTION_SCHEMES_BY_STRENGTH = (FERNET_X25519, HKDF_AES_GCM)  # weakest first: the floor's order
HKDF_LABEL = b"iot-device-onboarding/" + HKDF_AES_GCM.encode() + b"/v1"

DSN_MAX_LEN = 115  # so that "<ThingPrefix>_<DSN>" fits IoT's 128-character thing names
DSN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,115}", re.ASCII)
DSN_RULE = "1-115 characters of A-Z a-z 0-9 _ -"


def is_valid_dsn(dsn: str) -> bool:
    """The whole DSN is checked, not its first character (the original sample's mistake)."""
    return DSN_PATTERN.fullmatch(dsn) is not None


# The certificate names its device: one SAN URI "urn:iot-device-onboarding:dsn:<DSN>", compared
# exactly (the DSN alphabet needs no escaping in a URI). ACM PCA's base template
# EndEntityClientAuthCertificate/V1 copies the SAN and the subject from the CSR.
DSN_URI_PREFIX = "urn:iot-device-onboarding:dsn:"

# No "_" in the prefix: "<prefix>_<DSN>" then splits at its first "_" one way only.
THING_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9-]{1,12}", re.ASCII)
COMMON_NAME_MAX = 64  # RFC 5280 ub-common-name


def dsn_uri(dsn: str) -> str:
    return DSN_URI_PREFIX + dsn


def thing_name(thing_prefix: str, dsn: str) -> str:
    return f"{thing_prefix}_{dsn}"


def common_name_for(thing: str) -> str:
    """The thing name, or for names past X.509's 64 characters a unique shortened form."""
    if len(thing) <= COMMON_NAME_MAX:
        return thing
    digest = hashlib.sha256(thing.encode()).hexdigest()[:16]
    return f"{thing[: COMMON_NAME_MAX - 17]}~{digest}"


X25519_P = 2**255 - 19


def is_canonical_x25519(public_key: bytes) -> bool:
    """32 bytes encoding a u-coordinate below p: the top bit clear, no value aliasing another.

    RFC 7748 has a receiver mask the top bit; both sides here refuse such a key instead, so the
    bytes each puts in the HKDF context are the bytes the agreement used.
    """
    return len(public_key) == 32 and int.from_bytes(public_key, "little") < X25519_P


# What a device's factory attestation key signs (ECDSA P-256, SHA-256, DER): the DSN, the
# challenge the API gave the app for it (written to ATTESTATION_CHALLENGE) and the
# SubjectPublicKeyInfo (DER) of the key it asks to have certified. docs/ble-protocol.md 3.1.2.
ATTESTATION_PREFIX = b"iot-device-onboarding/attestation/v2\x00"
CHALLENGE_LEN = 32


def attestation_message(dsn: str, challenge: bytes, public_key_der: bytes) -> bytes:
    if len(challenge) != CHALLENGE_LEN:
        raise ValueError(f"the challenge is {CHALLENGE_LEN} bytes")
    return ATTESTATION_PREFIX + dsn.encode("ascii") + b"\x00" + challenge + public_key_der


# Renewal over MQTT: the topics under the device policy's things/<thing>/*. The request topic's
# filter (``+`` for the thing) is what the template's topic rules select FROM.
RENEW_TOPIC = "things/{thing}/certificate/renew"
RENEW_ACCEPTED, RENEW_REJECTED, RENEW_CONFIRM, RENEW_DUE = (
    "/accepted",
    "/rejected",
    "/confirm",
    "/due",
)


# The expiry watch's nudge on renew/due: {"notAfter", "reason", RENEW_WITHIN: seconds}; the
# device renews at a random moment of those seconds (provisioning/usecases/expiry.py's NudgeSpread).
RENEW_WITHIN = "renewWithinSeconds"


def renew_topic(thing: str, suffix: str = "") -> str:
    """``things/<thing>/certificate/renew`` plus one of the RENEW_* suffixes (or none)."""
    return RENEW_TOPIC.format(thing=thing) + suffix
