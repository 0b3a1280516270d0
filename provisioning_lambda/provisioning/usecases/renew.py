"""Renewal by the device itself over MQTT, authenticated by the certificate it connects with.

An IoT topic rule hands the renewal function what a device published on
``things/<thing>/certificate/renew`` (``{"csr"}``) or ``.../renew/confirm`` (``{"certificateId"}``)
as ``payload``, the message's raw bytes in base64 (``encode(*, 'base64')``), beside
``thingName`` (from the topic), ``principal`` (the publishing certificate's id) and ``clientId``,
which only IoT's functions supply: nothing the device writes can stand in for them. The payload
is parsed as strictly as an API body (a repeated key refused). Plain Python: no boto3 here.

A renewal request:

1. check the message and the CSR (its signature and key; its subject and extensions ignored);
2. take the device's lease (as in provisioning: recovery of what an earlier request left first)
   and authorise: the row is the thing's, ACTIVE, and ``principal`` is its current certificate,
   or the superseded one of a renewal in its grace period (the device lost the answer);
   then screen it (``_screen``, below): it may be a repeat, too soon, or stale;
3. issue from ACM PCA (APIPassthrough, the service's subject and DSN SAN) || write the intent,
   then fetch the certificate;
4. register it ACTIVE in IoT, then attach the shared policy || attach the thing;
5. commit the row naming the new certificate, the one the device renewed from kept as
   ``superseded`` (still ACTIVE) until the grace deadline, with a RENEW audit entry; an
   unconfirmed certificate of an earlier renewal is written down as retiring in the same write;
6. retire what is retiring; the handler then publishes ``renew/accepted``.

A confirm published with the new certificate writes the superseded one down as retiring and
retires it (REVOKED in IoT, detached, revoked in ACM PCA, audited). Otherwise the sweeper does
so once the grace period ends (the row waits in the sweep index until then).

Screening, before anything is issued (so a flood or a repeat costs no certificate):

- from the current certificate, younger than ``renewal_min_interval_seconds``: refused,
  ``RENEWAL_TOO_SOON`` (checked once before the lease too, so a flood does not hold the lease
  the owner's requests need);
- from the superseded certificate, for the key of the current (unconfirmed) one: the request
  that produced it, delivered again (Lambda delivers an asynchronous event at least once; MQTT
  QoS 1 delivers a message at least once): answered with that certificate again, nothing
  issued, nothing retired;
- from the superseded certificate, for another key, while the current one is younger than
  ``UNCONFIRMED_HOLD_SECONDS``: possibly published before the device got its answer (a stale
  request), refused, ``RENEWAL_UNCONFIRMED``; after that no such request can still be in
  flight (the function drops events older than ``MAX_EVENT_AGE_SECONDS`` and runs at most its
  timeout), so the device really lost its answer: the unconfirmed certificate goes, and it gets
  a new one.

Lambda re-delivers an event with the same request id; the handler makes each invocation's id
unique (``invocation_id``), so a twin neither shares the lease nor gets ACM PCA's answer to
another invocation's idempotency token (a certificate that may be revoked or current by then).
Whatever ACM PCA answers, a renewal whose outcome is the certificate the row already names
changes nothing and retires nothing.

So a device holds at most two ACTIVE certificates, both named by its row, and only during a
renewal: its working one and the one being retired. Failures before 5 are rolled back (the new
certificate revoked) within the time left, or left in the intent for the next request or the
sweeper, exactly as for provisioning (lease.py).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from provisioning.domain.budget import ATTEMPT_SECONDS, Budget
from provisioning.domain.crypto import CheckedCsr, certificate_facts, load_device_csr
from provisioning.domain.errors import (
    BadRequest,
    Conflict,
    DependencyFailed,
    Forbidden,
    NotFound,
)
from provisioning.domain.models import (
    DSN_PATTERN,
    CertificateRef,
    Device,
    DeviceRecord,
    DeviceStatus,
    Release,
    _body_text,
    _json_object,
)
from provisioning.lifecycle.issuance import IssuancePlan, NewCertificate, issue
from provisioning.lifecycle.lease import DeviceTask, iso
from provisioning.observability import logger
from provisioning.ports import Services
from provisioning.usecases.attestation import refuse_blocked

TOPIC = "things/{thing}/certificate/renew"
ACCEPTED = TOPIC + "/accepted"
REJECTED = TOPIC + "/rejected"
CERTIFICATE_ID = re.compile(r"[0-9a-f]{64}", re.ASCII)
CLIENT_ID_MAX = 128
# What the topic rules select (template.yaml): the payload, opaque, and what IoT supplies.
_RULE_FIELDS = frozenset({"payload", "thingName", "principal", "clientId"})
# RenewalFunction's EventInvokeConfig (template.yaml): an event older than this never runs.
# Three minutes: room for Lambda's throttle retries when renewals queue for a moment
# (docs/architecture.md, "Renewal without a herd").
MAX_EVENT_AGE_SECONDS = 180
# How long after a renewal a request from the superseded certificate for another key may be a
# stale one (published before the answer): more than MAX_EVENT_AGE_SECONDS plus the function's
# Timeout (25 s), which tests/unit/test_renewal_topics.py holds the template to.
UNCONFIRMED_HOLD_SECONDS = 240


@dataclass(frozen=True)
class RenewalMessage:
    """One message a device published, as the topic rule delivers it."""

    thing_name: str
    dsn: str
    principal: str
    client_id: str
    csr_pem: bytes = b""
    certificate_id: str = ""  # a confirm

    @property
    def is_confirm(self) -> bool:
        return bool(self.certificate_id)


@dataclass(frozen=True)
class RenewalResult:
    certificate_pem: str
    certificate_id: str
    not_after: str
    certificate_chain_pem: str = ""  # the issuing CA's certificate, then up to the root

    def to_message(self) -> dict[str, str]:
        message = {
            "certificatePem": self.certificate_pem,
            "certificateId": self.certificate_id,
            "notAfter": self.not_after,
        }
        if self.certificate_chain_pem:
            message["certificateChainPem"] = self.certificate_chain_pem
        return message


def thing_of(event: object, prefix: str) -> str:
    """The event's thing name if it is one of this fleet's (``<prefix>_<DSN>``), else ""."""
    thing = event.get("thingName") if isinstance(event, Mapping) else None
    if not isinstance(thing, str) or not thing.startswith(prefix + "_"):
        return ""
    return thing if DSN_PATTERN.fullmatch(thing[len(prefix) + 1 :]) else ""


def parse_renewal_event(event: object, prefix: str) -> RenewalMessage:
    """Check the whole event; raise BadRequest with a stable code on the first problem."""
    if not isinstance(event, Mapping):
        raise BadRequest("The message must be a JSON object.", "MESSAGE_INVALID")
    thing = thing_of(event, prefix)
    dsn = thing[len(prefix) + 1 :]  # DSN_PATTERN bounds its length too
    if not thing:
        raise BadRequest("The topic does not name a device of this fleet.", "THING_INVALID")
    principal = event.get("principal")
    if not isinstance(principal, str) or not CERTIFICATE_ID.fullmatch(principal):
        raise BadRequest("The message was not sent with a device certificate.", "PRINCIPAL_INVALID")
    client_id = event.get("clientId", "")
    if not isinstance(client_id, str) or len(client_id) > CLIENT_ID_MAX:
        raise BadRequest("The client id is not valid.", "MESSAGE_INVALID")
    if not set(event) <= _RULE_FIELDS:
        raise BadRequest("The message carries fields the topic rule does not.", "MESSAGE_INVALID")
    fields = device_payload(event)
    if set(fields) == {"csr"}:
        csr = fields["csr"]
        if not isinstance(csr, str) or not csr.isascii():
            raise BadRequest("csr must be a PEM certificate request.", "CSR_INVALID")
        return RenewalMessage(thing, dsn, principal, client_id, csr_pem=csr.encode("ascii"))
    if set(fields) == {"certificateId"}:
        certificate_id = fields["certificateId"]
        if not isinstance(certificate_id, str) or not CERTIFICATE_ID.fullmatch(certificate_id):
            raise BadRequest("certificateId is not a certificate id.", "MESSAGE_INVALID")
        return RenewalMessage(thing, dsn, principal, client_id, certificate_id=certificate_id)
    raise BadRequest(
        "The message must carry csr (a renewal) or certificateId (a confirm), only.",
        "MESSAGE_INVALID",
    )


def device_payload(event: Mapping[str, Any]) -> dict[str, Any]:
    """What the device published, from the rule's base64 ``payload``: a JSON object, parsed as
    strictly as an API body (the same rule: no repeated key, no NaN, at most MAX_BODY_BYTES);
    BadRequest (BODY_MISSING, BODY_NOT_JSON, DUPLICATE_FIELD, ...) otherwise."""
    return _json_object(_body_text(event.get("payload"), base64_encoded=True))


def is_confirm_event(event: object) -> bool:
    """Whether the rule's event is a confirm (a certificateId and no csr), which has no answer
    topic; False when the payload cannot be read (the device hears why on renew/rejected)."""
    if not isinstance(event, Mapping):
        return False
    try:
        fields = device_payload(event)
    except BadRequest:
        return False
    return "certificateId" in fields and "csr" not in fields


def invocation_id(aws_request_id: str) -> str:
    """This invocation's own id: Lambda's request id (what the logs show) and a nonce, as Lambda
    gives a re-delivered asynchronous event the request id it gave the first delivery."""
    return f"{aws_request_id}.{secrets.token_hex(4)}"


def renew_certificate(
    message: RenewalMessage, services: Services, budget: Budget, request_id: str
) -> RenewalResult:
    csr = load_device_csr(message.csr_pem)
    refuse_blocked(services, message.dsn)
    with services.budgets.running(budget):
        # Before the lease: a device renewing in a loop never holds it (its owner's requests
        # would meet REQUEST_IN_FLIGHT). Checked again, authoritatively, under the lease.
        seen = services.store.get(message.dsn)
        if seen is not None and seen.certificate_id == message.principal:
            _refuse_if_too_soon(seen, services.settings.renewal_min_interval_seconds, services)
        task = DeviceTask(services, Device(message.thing_name), message.dsn, budget, request_id)
        row = _claim_for(task, message)
        try:
            repeated = _screen(task, row, csr, message)
        except BaseException:
            task.release(work_left=bool(task.row and task.row.retiring))
            raise
        if repeated is not None:
            task.release(work_left=bool(task.row and task.row.retiring))
            logger.info("renewal repeated: answered with the current certificate")
            return repeated
        plan = _plan(task, row, csr, message.principal)
        logger.info(
            "renewal claimed",
            extra={"thing_name": task.thing_name, "from_superseded": plan.from_superseded},
        )
        issued = issue(task, plan.issuance)
        record = issued.record
    return RenewalResult(
        issued.certificate_pem, record.certificate_id, record.not_after, issued.chain_pem
    )


def confirm_renewal(
    message: RenewalMessage, services: Services, budget: Budget, request_id: str
) -> bool:
    """The device is connected with its new certificate: retire the one it renewed from.
    Returns whether there was one (a repeated confirm finds none and changes nothing)."""
    with DeviceTask.running(
        services, Device(message.thing_name), message.dsn, budget, request_id
    ) as task:
        row = _claim_for(task, message)
        current = row.certificate
        if current is None or message.certificate_id != current.certificate_id:
            task.release()
            raise Forbidden(
                "Confirm with the new certificate, naming it.", "CERTIFICATE_NOT_CURRENT"
            )
        superseded = row.superseded
        if superseded is None:
            task.release()
            return False
        try:
            budget.require("STORE_DEVICE", ATTEMPT_SECONDS)
            services.store.retire_superseded(task.dsn, request_id, superseded)
        except BaseException:
            task.release(work_left=True)  # it may have applied: whoever looks next will know
            raise
        task.row = replace(
            row, superseded=None, grace_until=0, retiring=(*row.retiring, superseded)
        )
        if task.recover(Release.RELEASE).unfinished:
            logger.warning("superseded certificate left to the sweeper")
    return True


def _screen(
    task: DeviceTask, row: DeviceRecord, csr: CheckedCsr, message: RenewalMessage
) -> RenewalResult | None:
    """Under the lease, before anything is issued: the answer to a repeated request (the
    current certificate), a refusal (raised), or None to go on (module docstring)."""
    services = task.services
    superseded = row.superseded
    if superseded is None or message.principal != superseded.certificate_id:
        _refuse_if_too_soon(row, services.settings.renewal_min_interval_seconds, services)
        return None
    # A certificate of an earlier CA (rotated since) cannot be fetched through this one: such a
    # request is taken as one for another key (held, then answered with a fresh certificate).
    if row.pca_certificate_arn.startswith(services.settings.ca_arn + "/"):
        task.budget.require("GET_CERTIFICATE")
        issued = services.pca.fetch(row.pca_certificate_arn)
        if issued is None or certificate_facts(issued.certificate_pem).iot_certificate_id != (
            row.certificate_id
        ):
            raise DependencyFailed("GET_CERTIFICATE")
        if _public_key_der(issued.certificate_pem) == csr.public_key_der:
            return RenewalResult(
                issued.certificate_pem, row.certificate_id, row.not_after, issued.chain_pem
            )
    age = _age_seconds(row, services)
    if age < UNCONFIRMED_HOLD_SECONDS:
        wait = UNCONFIRMED_HOLD_SECONDS - age
        raise Conflict(
            "The device's last renewal is not confirmed yet: connect with the certificate it "
            f"answered, or renew again in {wait} s.",
            "RENEWAL_UNCONFIRMED",
            retry_after=wait,
        )
    return None


def _refuse_if_too_soon(row: DeviceRecord, interval: int, services: Services) -> None:
    age = _age_seconds(row, services)
    if interval and age < interval:
        wait = interval - age
        raise Conflict(
            f"The device's certificate is {age} s old; renew again in {wait} s.",
            "RENEWAL_TOO_SOON",
            retry_after=wait,
        )


def _age_seconds(row: DeviceRecord, services: Services) -> int:
    """Seconds since the row named its current certificate: ``updated_at`` is written by the
    commit that names a certificate (provisioning, renewal) and otherwise only by a revocation,
    which leaves none. (Not the certificate's notBefore: ACM PCA backdates it.)"""
    try:
        since = datetime.fromisoformat(row.updated_at)
    except ValueError:
        return 1 << 31  # unknown: old enough for anything
    return max(0, int((services.clock() - since).total_seconds()))


def _public_key_der(certificate_pem: str) -> bytes:
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _claim_for(task: DeviceTask, message: RenewalMessage) -> DeviceRecord:
    """Take the lease (recovering first) and check the publisher is this device as its row
    knows it; anything else is refused, and nothing is created."""
    try:
        row = task.claim(must_exist=True)
    except NotFound:
        raise NotFound("No such device.", "DEVICE_NOT_FOUND") from None
    problem = _refusal(row, message)
    if problem is not None:
        # A row never provisioned stays for the sweeper to drop (this function deletes nothing).
        task.release(work_left=row is None or not row.status)
        raise problem
    assert row is not None  # _refusal refuses a missing row
    return row


def _refusal(row: DeviceRecord | None, message: RenewalMessage) -> Exception | None:
    if row is None or not row.status or row.thing_name != message.thing_name:
        return NotFound("No such device.", "DEVICE_NOT_FOUND")
    if row.status != DeviceStatus.ACTIVE or row.certificate is None:
        return Forbidden("The device's certificate is revoked.", "DEVICE_REVOKED")
    known = {row.certificate_id}
    if row.superseded is not None and not message.is_confirm:
        known.add(row.superseded.certificate_id)
    if message.principal not in known:
        return Forbidden(
            "Only the device's current certificate may renew it.", "CERTIFICATE_NOT_CURRENT"
        )
    return None


@dataclass(frozen=True)
class _RenewalPlan:
    issuance: IssuancePlan
    from_superseded: bool


def _plan(task: DeviceTask, row: DeviceRecord, csr: CheckedCsr, principal: str) -> _RenewalPlan:
    """Renewal's issuance (steps 3-6): the certificate the device renews from stays ACTIVE,
    superseded until the grace deadline (nothing is set INACTIVE); an unconfirmed certificate of
    an earlier renewal is written down as retiring; the commit is guarded by the allowlist (not
    blocked meanwhile)."""
    services, settings = task.services, task.services.settings
    current, superseded = row.certificate, row.superseded
    assert current is not None  # _claim_for refuses a row without one
    from_superseded = superseded is not None and principal == superseded.certificate_id
    dropped: CertificateRef | None
    if superseded is not None and from_superseded:
        # The device never got (or never used) the last certificate issued to it: that one
        # goes, and the one it still works with stays superseded.
        keep, dropped = superseded, current
    else:
        keep, dropped = current, superseded

    def record(new: NewCertificate) -> DeviceRecord:
        grace = new.at + timedelta(hours=settings.renewal_grace_hours)
        return replace(
            row,
            certificate_id=new.ref.certificate_id,
            certificate_arn=new.ref.certificate_arn,
            pca_certificate_arn=new.pca_certificate_arn,
            issuer_arn="",
            serial=new.ref.serial,
            not_before=iso(new.facts.not_before),
            not_after=iso(new.facts.not_after),
            key_algorithm=new.key_algorithm,
            status=DeviceStatus.ACTIVE,
            updated_at=iso(new.at),
            lease_request_id="",
            lease_until=0,
            intent=None,
            retiring=(),
            superseded=keep,
            grace_until=int(grace.timestamp()),
        )

    allowlist = services.allowlist
    return _RenewalPlan(
        IssuancePlan(
            record=record,
            audit="RENEW",
            csr=csr,
            retiring=(*row.retiring, *((dropped,) if dropped is not None else ())),
            guards=(allowlist.not_blocked_guard(task.dsn),) if allowlist is not None else (),
            purpose="renew",
            audit_details={"superseded_certificate_id": keep.certificate_id},
        ),
        from_superseded,
    )


def answer_topic(thing_name: str, accepted: bool) -> str:
    return (ACCEPTED if accepted else REJECTED).format(thing=thing_name)


def rejection(code: str, message: str, retry_after: int = 0) -> dict[str, Any]:
    """``{"code", "msg"}``, and ``retryAfterSeconds`` when the device should wait that long."""
    answer: dict[str, Any] = {"code": code, "msg": message}
    if retry_after > 0:
        answer["retryAfterSeconds"] = retry_after
    return answer
