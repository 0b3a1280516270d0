"""Instant in-memory adapters, so the CPU benchmark counts only the handler's own work."""

from __future__ import annotations

import datetime
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioning.config import Settings
from provisioning.domain.models import (
    AuditEvent,
    CertificateNames,
    CertificateRef,
    CommitGuard,
    DeviceRecord,
    Intent,
    IssuedCertificate,
    RegisteredCertificate,
    Release,
)


def fake_settings(algorithm: str) -> Settings:
    return Settings(
        devices_table="devices",
        audit_table="audit",
        ca_arn="arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/bench",
        ca_signing_algorithm="SHA256WITHECDSA",
        ca_certificate_mode="DEFAULT",
        thing_prefix="device",
        thing_group="bench",
        iot_policy_name="bench",
        cert_validity_days=365,
        device_key_algorithm=algorithm,
    )


def _certificate() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class FakePca:
    def __init__(self) -> None:
        self._pem = _certificate()

    def issue(
        self,
        csr_pem: bytes,
        validity_days: int,
        idempotency_token: str,
        names: CertificateNames,
    ) -> str:
        ca = "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/bench"
        return f"{ca}/certificate/{idempotency_token}"

    def fetch(self, certificate_arn: str) -> IssuedCertificate | None:
        return IssuedCertificate(self._pem, self._pem)

    def revoke(self, issuer_arn: str, serial_hex: str, reason: str) -> None:
        return None

    def valid_until(self) -> datetime.datetime:
        return x509.load_pem_x509_certificate(self._pem.encode()).not_valid_after_utc

    def root_valid_until(self) -> datetime.datetime:
        return self.valid_until()


class FakeIot:
    data_endpoint = "bench-ats.iot.us-east-1.amazonaws.com"

    def certificate_arn(self, certificate_id: str) -> str:
        return f"arn:aws:iot:us-east-1:123456789012:cert/{certificate_id}"

    def status(self, certificate_id: str) -> str:
        return "ACTIVE"

    def ensure_thing(self, thing_name: str) -> None:
        return None

    def register(self, certificate_pem: str, ca_pem: str) -> RegisteredCertificate:
        der = x509.load_pem_x509_certificate(certificate_pem.encode()).public_bytes(
            serialization.Encoding.DER
        )
        digest = hashlib.sha256(der).hexdigest()
        return RegisteredCertificate(digest, self.certificate_arn(digest))

    def attach_policy(self, certificate_arn: str) -> None:
        return None

    def attach_thing(self, thing_name: str, certificate_arn: str) -> None:
        return None

    def set_status(self, certificate_id: str, status: str) -> None:
        return None

    def detach(self, thing_name: str, certificate_arn: str) -> None:
        return None

    def remove_from_group(self, thing_name: str) -> None:
        return None


class FakeStore:
    def claim(
        self,
        dsn: str,
        owner_check: str | None,
        new_owner: str,
        request_id: str,
        now: int,
        lease_until: int,
        must_exist: bool = False,
    ) -> DeviceRecord | None:
        return None

    def get(self, dsn: str) -> DeviceRecord | None:
        return None

    def record_intent(self, dsn: str, request_id: str, intent: Intent) -> None:
        return None

    def commit(
        self,
        record: DeviceRecord,
        request_id: str,
        audit: AuditEvent,
        retiring: tuple[CertificateRef, ...] = (),
        superseded: CertificateRef | None = None,
        grace_until: int = 0,
        guards: tuple[CommitGuard, ...] = (),
    ) -> None:
        return None

    def commit_revocation(
        self,
        dsn: str,
        request_id: str,
        at: str,
        held: tuple[CertificateRef, ...],
    ) -> None:
        return None

    def retire_superseded(self, dsn: str, request_id: str, ref: CertificateRef) -> None:
        return None

    def settle(
        self,
        dsn: str,
        request_id: str,
        *,
        release: Release,
        clear_intent: bool = False,
        retired: tuple[CertificateRef, ...] = (),
        audits: tuple[AuditEvent, ...] = (),
        work_left: bool = False,
        now: int = 0,
        wake_at: int = 0,
        attempts: int = 0,
        park: bool = False,
    ) -> None:
        return None

    def due(self, now: int, limit: int) -> list[str]:
        return []

    def parked(self, limit: int) -> list[str]:
        return []
