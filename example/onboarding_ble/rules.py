"""The rules the device, the phone app and the API must agree on, defined once for the example.

The encryption scheme names (and the HKDF label of the stronger scheme) and the DSN rule.
The example owns this module: a device cannot ship Lambda code, and the Lambda's package
(its CodeUri) cannot import the example, so the provisioning function keeps its own
definitions (``provisioning/models.py``: ``ENCRYPTION_SCHEMES``, ``DSN_PATTERN``;
``provisioning/crypto.py``: ``HKDF_LABEL``). ``tests/unit/test_shared_rules.py`` fails as soon
as the two disagree, and checks the API model in template.yaml against the same DSN rule.
"""

from __future__ import annotations

import re

FERNET_X25519 = "fernet-x25519"  # the original sample's scheme: every device understands it
HKDF_AES_GCM = "x25519-hkdf-sha256-aes256gcm"  # binds the key to the DSN; opt-in
ENCRYPTION_SCHEMES = (FERNET_X25519, HKDF_AES_GCM)  # the first is the API's default
HKDF_LABEL = b"iot-device-onboarding/" + HKDF_AES_GCM.encode() + b"/v1"

DSN_MAX_LEN = 115  # so that "<ThingPrefix>_<DSN>" fits IoT's 128-character thing names
DSN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,115}", re.ASCII)
DSN_RULE = "1-115 characters of A-Z a-z 0-9 _ -"


def is_valid_dsn(dsn: str) -> bool:
    """The whole DSN is checked, not its first character (the original sample's mistake)."""
    return DSN_PATTERN.fullmatch(dsn) is not None
