"""Settings from the environment, parsed and checked once per container."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

KEY_ALGORITHMS = ("EC_prime256v1", "RSA_2048")
SIGNING_ALGORITHMS = ("SHA256WITHECDSA", "SHA256WITHRSA")
CA_MODES = ("DEFAULT", "SNI_ONLY")
# No "_" in the prefix: "<prefix>_<DSN>" splits at its first "_" one way only, so a thing name
# (and the certificate's common name) names one DSN. Same as template.yaml's ThingPrefix.
THING_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9-]{1,12}", re.ASCII)
TOPIC_ARN = re.compile(r"arn:[\w-]+:sns:[\w-]+:\d{12}:[\w.-]{1,256}", re.ASCII)


class ConfigError(RuntimeError):
    """The function's environment is incomplete or invalid (a deployment mistake)."""


def _digits(value: str) -> bool:
    """ASCII digits only: "²".isdigit() is True, and int("²") fails."""
    return value.isascii() and value.isdigit()


@dataclass(frozen=True)
class Settings:
    devices_table: str
    audit_table: str
    ca_arn: str
    ca_signing_algorithm: str
    ca_certificate_mode: str
    thing_prefix: str
    thing_group: str
    iot_policy_name: str
    cert_validity_days: int
    device_key_algorithm: str
    subject_o: str = ""
    subject_ou: str = ""
    subject_c: str = ""
    # The manufacturer allowlist (attestation.py); "" in a deployment without one.
    allowlist_table: str = ""
    require_attestation: bool = False
    # How long a renewed device keeps its previous certificate ACTIVE, unconfirmed (renewal).
    renewal_grace_hours: int = 72
    # A device renews from its current certificate no sooner than this after it was issued
    # (0: no minimum); renewal.py answers RENEWAL_TOO_SOON before.
    renewal_min_interval_seconds: int = 300
    # A certificate is EXPIRING once less than this share of cert_validity_days is left.
    expiry_warning_percent: int = 30
    # The operators' topic the expiry watch reports to; "" in the functions that do not.
    expiry_topic_arn: str = ""

    @property
    def partition(self) -> str:
        return self.ca_arn.split(":")[1]

    @property
    def iot_arn_prefix(self) -> str:
        """``arn:<partition>:iot:<region>:<account>``: IoT lives beside the CA."""
        _, partition, _, region, account = self.ca_arn.split(":")[:5]
        return f"arn:{partition}:iot:{region}:{account}"

    def thing_name(self, dsn: str) -> str:
        return f"{self.thing_prefix}_{dsn}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def need(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ConfigError(f"environment variable {name} is not set")
            return value

        def one_of(name: str, allowed: tuple[str, ...]) -> str:
            value = need(name)
            if value not in allowed:
                raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")
            return value

        validity = need("DEVICE_CERT_VALIDITY_DAYS")
        if not _digits(validity) or not 1 <= int(validity) <= 3650:
            raise ConfigError("DEVICE_CERT_VALIDITY_DAYS must be a whole number of days, 1-3650")
        grace = env.get("RENEWAL_GRACE_HOURS", "72").strip()
        if not _digits(grace) or not 1 <= int(grace) <= 720:
            raise ConfigError("RENEWAL_GRACE_HOURS must be a whole number of hours, 1-720")
        interval = env.get("RENEWAL_MIN_INTERVAL_SECONDS", "300").strip()
        if not _digits(interval) or not 0 <= int(interval) <= 86400:
            raise ConfigError("RENEWAL_MIN_INTERVAL_SECONDS must be a whole number, 0-86400")
        prefix = need("THING_PREFIX")
        if not THING_PREFIX_PATTERN.fullmatch(prefix):
            raise ConfigError("THING_PREFIX must be 1-12 of A-Z a-z 0-9 - (no _)")
        ca_arn = need("CA_ARN")
        if not re.fullmatch(
            r"arn:[\w-]+:acm-pca:[\w-]+:\d{12}:certificate-authority/[\w-]+", ca_arn
        ):
            raise ConfigError("CA_ARN is not an ACM PCA certificate authority ARN")
        warning = env.get("EXPIRY_WARNING_PERCENT", "").strip() or "30"
        if not _digits(warning) or not 5 <= int(warning) <= 90:
            raise ConfigError("EXPIRY_WARNING_PERCENT must be a whole number, 5-90")
        require_attestation = env.get("REQUIRE_ATTESTATION", "false").strip() or "false"
        if require_attestation not in ("true", "false"):
            raise ConfigError('REQUIRE_ATTESTATION must be "true" or "false"')
        allowlist_table = env.get("ALLOWLIST_TABLE", "").strip()
        if require_attestation == "true" and not allowlist_table:
            raise ConfigError("REQUIRE_ATTESTATION=true needs ALLOWLIST_TABLE")
        topic_arn = env.get("EXPIRY_TOPIC_ARN", "").strip()
        if topic_arn and not TOPIC_ARN.fullmatch(topic_arn):
            raise ConfigError("EXPIRY_TOPIC_ARN is not an SNS topic ARN")
        return cls(
            devices_table=need("DEVICES_TABLE"),
            audit_table=need("AUDIT_TABLE"),
            ca_arn=ca_arn,
            ca_signing_algorithm=one_of("CA_SIGNING_ALGORITHM", SIGNING_ALGORITHMS),
            ca_certificate_mode=one_of("CA_CERTIFICATE_MODE", CA_MODES),
            thing_prefix=prefix,
            thing_group=need("THING_GROUP"),
            iot_policy_name=need("IOT_POLICY_NAME"),
            cert_validity_days=int(validity),
            device_key_algorithm=one_of("DEVICE_KEY_ALGORITHM", KEY_ALGORITHMS),
            subject_o=env.get("SUBJECT_O", ""),
            subject_ou=env.get("SUBJECT_OU", ""),
            subject_c=env.get("SUBJECT_C", ""),
            allowlist_table=allowlist_table,
            require_attestation=require_attestation == "true",
            renewal_grace_hours=int(grace),
            renewal_min_interval_seconds=int(interval),
            expiry_warning_percent=int(warning),
            expiry_topic_arn=topic_arn,
        )


# template.yaml's AppOrigin (its AllowedPattern is "^(|" + this + ")$"): empty, an https origin,
# or http on localhost/127.0.0.1; host names by DNS label, a port of 1-65535 without the
# scheme's default (a browser's Origin never names it, so such a value would match no page).
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
APP_ORIGIN_PATTERN = re.compile(
    r"https://[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
    r"(:(?!443$)" + _PORT + r")?"
    r"|http://(localhost|127\.0\.0\.1)(:(?!80$)" + _PORT + r")?",
    re.ASCII,
)


def app_origin(env: Mapping[str, str] | None = None) -> str | None:
    """The phone app's origin (APP_ORIGIN), the one browser origin the API's answers allow;
    None when there is none. Read at import by the API's resolver, so a bad value is a
    ConfigError there."""
    value = (os.environ if env is None else env).get("APP_ORIGIN", "").strip()
    if not value:
        return None
    if not APP_ORIGIN_PATTERN.fullmatch(value):
        raise ConfigError(
            "APP_ORIGIN must be an origin such as https://app.example.com (no path, no '*')"
        )
    return value
