"""A model of the whole device lifecycle, driven by Hypothesis in random sequences.

Rules are what users, devices and schedules do, each through its real entry point (the API
handler, the renewal function's handler as the topic rule delivers a device's message, the
sweeper, the expiry watch) with the real adapters on moto's mock of the stack deployed from
template.yaml: provision (publicKey and CSR mode), renew, confirm, revoke, block (allowlist),
release, transfer start / cancel / claim, an expiry nudge, the sweeper, and time passing (a
lease, the renewal hold, a transfer's lifetime, the renewal grace period, the expiry window).
Any request may be killed just before or just after a random AWS call, or lose the answer of
one (tests/support/crash.py, as in test_crash_safety.py).

The model keeps, per device, its owner and the certificates each owner's device holds (what
the answers handed it). The invariants (docs/testing.md lists them with the rules):

- at every step, every ACTIVE certificate of the example's things is known to its thing's row
  (current, superseded, retiring or the intent), and one the row does not name as current or
  superseded is in the sweeper's index: recovery will find it;
- at once after a 200 from revoke, block, release or claim, no certificate the device held
  before (for release and claim: its former owner's device) is ACTIVE in IoT;
- a released or transferred device's former owner can read and change nothing (the API
  answers 404) and the device's certificates from their time renew nothing;
- each change answered 200 has its audit entry;
- once recovery has run (``settle``: every lease expired, then the sweeper), every ACTIVE
  certificate is attached to exactly its thing and named by the row (current, or superseded
  inside the renewal window), a thing without an owner has none, no certificate a former
  owner's device holds is ACTIVE, and every other certificate is REVOKED in IoT, detached,
  revoked in ACM PCA and audited (test_crash_safety.invariant_problems).

``make test`` runs a fixed seed and a small budget; ``make soak`` runs many more examples
(``LIFECYCLE_MODEL_EXAMPLES``, ``LIFECYCLE_MODEL_STEPS``, a random seed) and prints
what it ran.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from moto.acmpca.models import acmpca_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iot.models import iot_backends
from moto.iotdata.models import iotdata_backends

from devstack.cloudformation.deployer import Deployment
from provisioning.adapters.composition import get_services, get_watch_services
from provisioning.domain.crypto import certificate_facts, common_name_for
from provisioning.domain.fleet_models import TRANSFER_TTL_SECONDS
from provisioning.usecases.renew import UNCONFIRMED_HOLD_SECONDS
from tests.integration import test_crash_safety
from tests.integration.fleet_support import fleet_event
from tests.integration.test_crash_safety import World, invariant_problems, run_sweeper
from tests.support.crash import Crash, ProcessDeath
from tests.support.csr import make_csr
from tests.support.lambda_support import Device, FakeLambdaContext, api_event, unique_dsn
from tests.support.moto_state import stored_item
from tests.support.rule_events import rule_event

world = test_crash_safety.world  # the same fixture: a warm container on moto, calls recorded

ACCOUNT, REGION = DEFAULT_ACCOUNT_ID, "us-east-1"
ALICE, BOB, ADMIN = "sub-alice", "sub-bob", "sub-admin"
MEMBERS = (ALICE, BOB)
GROUPS = {ALICE: "Members", BOB: "Members", ADMIN: "Administrators"}
DEVICES = 2  # per sequence; each sequence has DSNs of its own

# A kill at one of a request's AWS calls (calls are numbered from 1; a number past the last
# call of the request kills nothing), or none.
FAULTS = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(["die_before", "die_after", "lose"]), st.integers(1, 22)),
)
Fault = tuple[str, int] | None


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else default


SOAK = bool(os.environ.get("LIFECYCLE_MODEL_EXAMPLES"))
EXAMPLES = _int_env("LIFECYCLE_MODEL_EXAMPLES", 12)
STEPS = _int_env("LIFECYCLE_MODEL_STEPS", 25)


@dataclass
class Stats:
    """What the runs did, printed at the end (``make soak``)."""

    sequences: int = 0
    steps: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    lost_answers: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    traces: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [
            f"lifecycle model: {self.sequences} sequences, {self.steps} steps, "
            f"{self.kills} requests killed, {self.lost_answers} answers lost",
            "  steps per rule: "
            + ", ".join(f"{name} {count}" for name, count in sorted(self.rules.items())),
            "  outcomes: "
            + ", ".join(f"{name} {count}" for name, count in sorted(self.answers.items())),
        ]
        return "\n".join(lines)


STATS = Stats()


@dataclass
class Model:
    """One device as the model believes it is."""

    dsn: str
    key: Device
    owner: str = ""
    blocked: bool = False
    # Every certificate the physical device was handed, newest first, and whose time it was.
    held: list[str] = field(default_factory=list)
    epoch: dict[str, str] = field(default_factory=dict)
    former: set[str] = field(default_factory=set)
    transfer_code: str = ""

    def certificates_of(self, owner: str) -> set[str]:
        return {cert for cert, who in self.epoch.items() if who == owner}

    def lose_owner(self) -> None:
        if self.owner:
            self.former.add(self.owner)
        self.owner, self.transfer_code = "", ""

    def gain_owner(self, owner: str) -> None:
        if self.owner != owner:
            self.lose_owner()
        self.owner = owner
        self.former.discard(owner)


class Problem(AssertionError):
    pass


IN_FLIGHT = "REQUEST_IN_FLIGHT"


def lifecycle_machine(world: World, stack: Deployment) -> type[RuleBasedStateMachine]:
    watch_env = stack.functions["ExpiryWatchFunction"].environment

    class Lifecycle(RuleBasedStateMachine):
        @initialize(csr=st.booleans(), renewed=st.booleans())
        def start(self, csr: bool, renewed: bool) -> None:
            """Two devices: the first provisioned by Alice a while ago (and maybe renewed since,
            inside its grace period: two ACTIVE certificates), the second new."""
            world.offset = timedelta()
            self.devices = [
                Model(dsn, Device(dsn)) for dsn in (unique_dsn() for _ in range(DEVICES))
            ]
            self.things = {world.services.settings.thing_name(d.dsn): d for d in self.devices}
            self.trace: list[str] = []
            STATS.sequences += 1
            self.provision(0, ALICE, csr, None)
            self._later("lease")
            if renewed:
                first = self.devices[0]
                self._renew(first, first.held[0], Crash())
                # No fault was injected: a refusal here means the model's messages no longer
                # reach the function as IoT delivers them, and every renewal rule would be moot.
                if len(first.held) != 2:
                    raise Problem(f"the starting renewal was refused: {self.trace}")

        def teardown(self) -> None:
            if SOAK:
                STATS.traces.append(" ".join(self.trace))

        # ------------------------------------------------------------ running requests

        def _step(self, name: str, fault: Fault) -> Crash:
            STATS.steps += 1
            STATS.rules[name] += 1
            self.trace.append(name + (f"[{fault[0]}={fault[1]}]" if fault else ""))
            return Crash(**{fault[0]: fault[1]}) if fault else Crash()

        def _run(self, crash: Crash, request: Any) -> tuple[int, dict[str, Any]]:
            """The request under the crash plan: (0, {}) when the process died."""
            try:
                with crash.watching(*world.clients):
                    status, answer = request()
            except ProcessDeath:
                status, answer = 0, {}
            STATS.kills += int(crash.dead)
            STATS.lost_answers += int(crash.lost)
            STATS.answers[f"{status} {answer.get('code', '')}".strip()] += 1
            if status == 500 or (status >= 500 and not crash.dead and not crash.lost):
                raise Problem(f"answered {status} {answer}")
            return status, answer

        def _api(
            self, method: str, path: str, sub: str, body: dict[str, Any] | None = None
        ) -> tuple[int, dict[str, Any]]:
            from provisioning.handlers.api import lambda_handler

            raw = json.dumps(body) if body is not None else None
            if path.startswith("/allowlist/"):
                event = api_event(raw, sub, GROUPS[sub], method=method, path=path)
                event["resource"] = event["requestContext"]["resourcePath"] = (
                    "/allowlist/{dsn}/block"
                )
                event["pathParameters"] = {"dsn": path.split("/")[2]}
            elif path == "/certificate":
                event = api_event(raw, sub, GROUPS[sub], method=method, path=path)
            else:
                event = fleet_event(method, path, sub, raw)
            with world.recorder.acting_as("ProvisioningFunction"):
                response = lambda_handler(event, FakeLambdaContext())
            return response["statusCode"], json.loads(response["body"])

        def _device_message(self, device: Model, principal: str, **fields: str) -> dict[str, str]:
            from provisioning.handlers.renewal import lambda_handler

            thing = world.services.settings.thing_name(device.dsn)
            # The event the template's topic rule delivers for this publish.
            event = rule_event(thing, principal, fields, confirm="certificateId" in fields)
            with world.recorder.acting_as("RenewalFunction"):
                answer = lambda_handler(event, FakeLambdaContext(function_name="RenewalFunction"))
            return dict(answer)

        def _reconcile(self, device: Model) -> None:
            """After a request that did not answer 200, learn what it committed from the row
            (a claim or release that died after its commit changed the owner)."""
            owner = _owner(world, device.dsn)
            if owner != device.owner:
                if owner:
                    device.gain_owner(owner)
                else:
                    device.lose_owner()
            if not _transfer_pending(world, device.dsn):
                device.transfer_code = ""

        def _owned(self, i: int) -> Model:
            owned = [d for d in self.devices if d.owner]
            return owned[i % len(owned)]

        def _holding(self, i: int) -> Model:
            holding = [d for d in self.devices if d.held]
            return holding[i % len(holding)]

        def _has(self, what: str) -> bool:
            devices = getattr(self, "devices", [])
            if what == "owner":
                return any(d.owner for d in devices)
            return any(d.held for d in devices)

        # ------------------------------------------------------------ rules

        @rule(
            i=st.integers(0, DEVICES - 1),
            who=st.sampled_from(MEMBERS),
            csr=st.booleans(),
            fault=FAULTS,
        )
        def provision(self, i: int, who: str, csr: bool, fault: Fault) -> None:
            device = self.devices[i]
            crash = self._step("provision-csr" if csr else "provision-key", fault)
            owner_before = _owner(world, device.dsn)
            body = {"DSN": device.dsn, "csr": make_csr()} if csr else json.loads(device.key.body())
            status, answer = self._run(crash, lambda: self._api("POST", "/certificate", who, body))
            if status != 200:
                if status in (403, 409) and device.owner and device.owner != who:
                    assert answer["code"] in ("DEVICE_OWNED", "DEVICE_BLOCKED", "REQUEST_IN_FLIGHT")
                self._reconcile(device)
                return
            if owner_before and owner_before != who:
                raise Problem(f"{who} provisioned a device {owner_before} owns")
            if device.blocked:
                raise Problem("a blocked device was provisioned")
            device.gain_owner(who)
            cert = answer["certificateId"]
            device.held.insert(0, cert)
            device.epoch[cert] = who
            self._audited(device, "ISSUE", certificate_id=cert)

        @precondition(lambda self: self._has("held"))
        @rule(
            i=st.integers(0, DEVICES - 1),
            lost_answer=st.booleans(),
            later=st.booleans(),
            fault=FAULTS,
        )
        def renew(self, i: int, lost_answer: bool, later: bool, fault: Fault) -> None:
            """The device asks for a new certificate from the one it works with; or, having
            lost the answer to its last renewal, from the one before; now or once its
            certificate is old enough to renew (and leases have expired)."""
            device = self._holding(i)
            if later:
                self._later("lease")
            principal = device.held[1 if lost_answer and len(device.held) > 1 else 0]
            crash = self._step("renew-again" if lost_answer else "renew", fault)
            self._renew(device, principal, crash)

        def _renew(self, device: Model, principal: str, crash: Crash) -> None:
            owner_before = _owner(world, device.dsn)

            def request() -> tuple[int, dict[str, Any]]:
                answer = self._device_message(device, principal, csr=make_csr())
                return (200 if answer["result"] == "ACCEPTED" else 400), answer

            status, answer = self._run(crash, request)
            if status != 200:
                self._reconcile(device)
                return
            whose = device.epoch[principal]
            if whose != owner_before or device.blocked:
                raise Problem(
                    f"a certificate of {whose or 'nobody'}'s time renewed the device of "
                    f"{owner_before or 'nobody'} (blocked: {device.blocked})"
                )
            cert = answer["certificateId"]
            if cert not in device.held:  # a repeated request is answered with the same one
                device.held.insert(0, cert)
                device.epoch[cert] = whose
            self._audited(device, "RENEW", certificate_id=cert)

        @precondition(lambda self: self._has("held"))
        @rule(i=st.integers(0, DEVICES - 1), fault=FAULTS)
        def confirm(self, i: int, fault: Fault) -> None:
            device = self._holding(i)
            crash = self._step("confirm", fault)
            superseded = _row(world, device.dsn).get("superseded", {}).get("M", {})
            newest = device.held[0]

            def request() -> tuple[int, dict[str, Any]]:
                answer = self._device_message(device, newest, certificateId=newest)
                return (200 if answer["result"] == "CONFIRMED" else 400), answer

            status, _ = self._run(crash, request)
            if status == 200 and superseded:
                old = superseded["certificate_id"]["S"]
                if _status(old) == "ACTIVE":
                    raise Problem("a confirmed renewal left the superseded certificate ACTIVE")
                self._audited(device, "REVOKE", certificate_id=old)
            if status != 200:
                self._reconcile(device)

        @precondition(lambda self: self._has("owner"))
        @rule(i=st.integers(0, DEVICES - 1), by_admin=st.booleans(), fault=FAULTS)
        def revoke(self, i: int, by_admin: bool, fault: Fault) -> None:
            device = self._owned(i)
            crash = self._step("revoke", fault)
            who = ADMIN if by_admin else device.owner
            status, answer = self._run(
                crash, lambda: self._api("DELETE", f"/devices/{device.dsn}/certificate", who)
            )
            if status != 200:
                self._reconcile(device)
                return
            self._none_active(device.certificates_of(device.owner), "a revoked device's")
            if "revokedCertificateId" in answer:
                self._audited(device, "REVOKE", certificate_id=answer["revokedCertificateId"])

        @precondition(lambda self: not any(d.blocked for d in getattr(self, "devices", [])))
        @rule(i=st.integers(0, DEVICES - 1), fault=FAULTS)
        def block(self, i: int, fault: Fault) -> None:
            device = self.devices[i]
            crash = self._step("block", fault)
            status, _ = self._run(
                crash, lambda: self._api("POST", f"/allowlist/{device.dsn}/block", ADMIN)
            )
            if status in (0, 200, 409) or status >= 500:
                device.blocked = True  # written first: whatever the answer, it may stand
            if status != 200:
                self._reconcile(device)
                return
            self._none_active(set(device.held), "a blocked device's")
            if not _audit_entries(world, device.dsn, "ALLOWLIST_BLOCK", pk=device.dsn):
                raise Problem("a block without its audit entry")

        @precondition(lambda self: self._has("owner"))
        @rule(i=st.integers(0, DEVICES - 1), fault=FAULTS)
        def release(self, i: int, fault: Fault) -> None:
            device = self._owned(i)
            crash = self._step("release", fault)
            owner = device.owner
            status, _ = self._run(
                crash, lambda: self._api("DELETE", f"/devices/{device.dsn}", owner)
            )
            if status != 200:
                self._reconcile(device)
                return
            device.lose_owner()
            self._none_active(device.certificates_of(owner), "the former owner's (release)")
            self._audited(device, "RELEASE", owner=owner)

        @precondition(lambda self: self._has("owner"))
        @rule(i=st.integers(0, DEVICES - 1), fault=FAULTS)
        def transfer_start(self, i: int, fault: Fault) -> None:
            device = self._owned(i)
            crash = self._step("transfer-start", fault)
            status, answer = self._run(
                crash, lambda: self._api("POST", f"/devices/{device.dsn}/transfer", device.owner)
            )
            if status != 200:
                self._reconcile(device)
                return
            device.transfer_code = answer["transferCode"]
            self._audited(device, "TRANSFER_START")

        @precondition(lambda self: self._has("owner"))
        @rule(i=st.integers(0, DEVICES - 1), fault=FAULTS)
        def transfer_cancel(self, i: int, fault: Fault) -> None:
            device = self._owned(i)
            crash = self._step("transfer-cancel", fault)
            status, _ = self._run(
                crash, lambda: self._api("DELETE", f"/devices/{device.dsn}/transfer", device.owner)
            )
            if status == 200:
                device.transfer_code = ""
                self._audited(device, "TRANSFER_CANCEL")
            else:
                self._reconcile(device)

        @precondition(lambda self: self._has("owner"))
        @rule(i=st.integers(0, DEVICES - 1), fault=FAULTS)
        def transfer_claim(self, i: int, fault: Fault) -> None:
            """The recipient claims with the code the owner gave them (the owner starts a
            transfer first when none is pending)."""
            device = self._owned(i)
            if not device.transfer_code:
                self.transfer_start(i, None)
                if not device.transfer_code:
                    return
            crash = self._step("transfer-claim", fault)
            claimant = BOB if device.owner == ALICE else ALICE
            previous = device.owner
            status, _ = self._run(
                crash,
                lambda: self._api(
                    "POST",
                    f"/devices/{device.dsn}/claim",
                    claimant,
                    {"code": device.transfer_code},
                ),
            )
            if status != 200:
                self._reconcile(device)
                return
            device.gain_owner(claimant)
            self._none_active(device.certificates_of(previous), "the former owner's (claim)")
            self._audited(device, "TRANSFER_CLAIM", previous_owner=previous)

        @rule(
            span=st.sampled_from(
                ["lease", "transfer", "grace", "expiry window"],
            )
        )
        def time_passes(self, span: str) -> None:
            self._step(f"time-passes-{span}", None)
            self._later(span)

        def _later(self, span: str) -> None:
            settings_ = world.services.settings
            seconds = {
                "lease": max(settings_.renewal_min_interval_seconds, UNCONFIRMED_HOLD_SECONDS) + 1,
                "transfer": TRANSFER_TTL_SECONDS + 1,
                "grace": settings_.renewal_grace_hours * 3600 + 60,
                "expiry window": int(
                    timedelta(days=settings_.cert_validity_days).total_seconds()
                    * (100 - settings_.expiry_warning_percent)
                    / 100
                )
                + 3600,
            }[span]
            world.later(seconds)

        @rule(fault=FAULTS)
        def sweeper(self, fault: Fault) -> None:
            crash = self._step("sweeper", fault)

            def request() -> tuple[int, dict[str, Any]]:
                run_sweeper(world)
                return 200, {}

            self._run(crash, request)
            for device in self.devices:
                self._reconcile(device)

        @precondition(lambda self: self._has("owner"))
        @rule()
        def expiry_nudge(self) -> None:
            """The expiry watch runs; each device it asks to renew does so at once."""
            self._step("expiry-nudge", None)
            from provisioning.handlers.expiry import lambda_handler

            published = _published()
            before = len(published)
            services = get_services()  # the watch's settings: the topic it reports to
            settings = services.settings
            services.settings = replace(settings, expiry_topic_arn=watch_env["EXPIRY_TOPIC_ARN"])
            try:
                with _environment(watch_env):
                    get_watch_services.cache_clear()
                    lambda_handler({}, FakeLambdaContext(120, "ExpiryWatchFunction"))
                    get_watch_services.cache_clear()
            finally:
                services.settings = settings
            asked = [topic.split("/")[1] for topic, _ in _published()[before:]]
            for thing in asked:
                device = self.things.get(thing)
                if device is None:
                    continue  # an earlier sequence's device
                row = _row(world, device.dsn)
                if row.get("status", {}).get("S") != "ACTIVE" or not row.get("owner_sub"):
                    raise Problem("the expiry watch asked a device with no ACTIVE certificate")
                if device.held and _status(device.held[0]) == "ACTIVE":
                    STATS.rules["renew-nudged"] += 1
                    self._renew(device, device.held[0], Crash())

        @rule()
        def settle(self) -> None:
            """Every lease expires and the sweeper runs: then the strict invariants hold."""
            self._step("settle", None)
            world.later(max(world.services.settings.renewal_min_interval_seconds, 300) + 1)
            for _ in range(8):  # rows of earlier sequences may be due as well
                run_sweeper(world)
                if not any(_due(world, d.dsn) for d in self.devices):
                    break
            problems = {}
            for device in self.devices:
                self._reconcile(device)
                found = invariant_problems(world, device.dsn, revoked=False)
                found += _attachment_problems(world, device.dsn)
                if not device.owner and _active(world, device.dsn):
                    found.append("a thing without an owner has an ACTIVE certificate")
                for former in sorted(device.former):
                    if any(_status(c) == "ACTIVE" for c in device.certificates_of(former)):
                        found.append("a certificate of the former owner's device is ACTIVE")
                if found:
                    problems[device.dsn] = found
            if problems:
                raise Problem(f"after recovery: {problems}")

        @rule(i=st.integers(0, DEVICES - 1))
        def former_owner_tries(self, i: int) -> None:
            """A former owner tries to change the device through the API, and their device to
            renew from each certificate of their time: all refused."""
            device = self.devices[i]
            formers = sorted(device.former - {device.owner})
            if not formers:
                return
            self._step("former-owner-tries", None)
            for method, path in (
                ("POST", f"/devices/{device.dsn}/transfer"),
                ("DELETE", f"/devices/{device.dsn}/certificate"),
                ("DELETE", f"/devices/{device.dsn}"),
            ):
                row = world.services.store.get(device.dsn)
                # The user whose release died part-way may repeat it, which only finishes it
                # (the device stays nobody's): 200, or 409 while the dead request's lease runs.
                finishing = (
                    method == "DELETE"
                    and path.endswith(device.dsn)
                    and row is not None
                    and row.releasing
                    and row.released_by == formers[0]
                )
                status, answer = self._api(method, path, formers[0])
                if finishing and (status, answer.get("code")) in ((200, None), (409, IN_FLIGHT)):
                    if _owner(world, device.dsn) == formers[0]:
                        raise Problem("repeating a release gave the former owner the device")
                    continue
                if status != 404:
                    raise Problem(f"the former owner's {method} {path}: {status} {answer}")
            for cert in sorted(device.certificates_of(formers[0])):
                answer = self._device_message(device, cert, csr=make_csr())
                if answer["result"] == "ACCEPTED":
                    raise Problem("a former owner's device renewed its certificate")

        # ------------------------------------------------------------ invariants

        @invariant()
        def every_active_certificate_is_known_to_recovery(self) -> None:
            if not hasattr(self, "devices"):
                return
            problems = []
            for device in self.devices:
                problems += [f"{device.dsn}: {p}" for p in _unknown_active(world, device.dsn)]
            if problems:
                raise Problem("; ".join(problems))

        @invariant()
        def former_owners_read_and_change_nothing(self) -> None:
            if not hasattr(self, "devices"):
                return
            for device in self.devices:
                owner = _owner(world, device.dsn)
                for former in sorted(device.former - {owner}):
                    status, answer = self._api("GET", f"/devices/{device.dsn}", former)
                    if status != 404:
                        raise Problem(f"the former owner reads the device: {status} {answer}")

        # ------------------------------------------------------------ checks

        def _none_active(self, certificates: set[str], whose: str) -> None:
            active = sorted(c for c in certificates if _status(c) == "ACTIVE")
            if active:
                raise Problem(f"{len(active)} of {whose} certificates still ACTIVE: {active}")

        def _audited(self, device: Model, event: str, **details: str) -> None:
            if not _audit_entries(world, device.dsn, event, **details):
                raise Problem(f"no {event} audit entry for {details}")

    return Lifecycle


# --------------------------------------------------------------------------- reading AWS


def _row(world: World, dsn: str) -> dict[str, Any]:
    return stored_item(world.env["DEVICES_TABLE"], {"dsn": {"S": dsn}})


def _owner(world: World, dsn: str) -> str:
    """The device's owner: a row with no status (released, or never provisioned) has none,
    whatever ``owner_sub`` says (a lease taken by the sweeper or a device keeps its name)."""
    row = _row(world, dsn)
    return str(row.get("owner_sub", {}).get("S", "")) if "status" in row else ""


def _transfer_pending(world: World, dsn: str) -> bool:
    return any(k.startswith("transfer") for k in _row(world, dsn))


def _due(world: World, dsn: str) -> bool:
    return "sweep" in _row(world, dsn)


def _status(certificate_id: str) -> str:
    cert = iot_backends[ACCOUNT][REGION].certificates.get(certificate_id)
    return cert.status if cert is not None else ""


_COMMON_NAMES: dict[str, str] = {}


def _common_name(cert: Any) -> str:
    if cert.certificate_id not in _COMMON_NAMES:
        parsed = x509.load_pem_x509_certificate(cert.certificate_pem.encode())
        cn = parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        _COMMON_NAMES[cert.certificate_id] = str(cn[0].value) if cn else ""
    return _COMMON_NAMES[cert.certificate_id]


def _certificates(world: World, dsn: str) -> dict[str, Any]:
    """IoT's certificates whose common name is this device's thing."""
    name = common_name_for(world.services.settings.thing_name(dsn))
    return {
        cert.certificate_id: cert
        for cert in iot_backends[ACCOUNT][REGION].certificates.values()
        if _common_name(cert) == name
    }


def _active(world: World, dsn: str) -> list[str]:
    return sorted(i for i, c in _certificates(world, dsn).items() if c.status == "ACTIVE")


def _unknown_active(world: World, dsn: str) -> list[str]:
    """ACTIVE certificates recovery would never find: named nowhere on the row, or named as
    work left on a row the sweeper's index does not list."""
    row = _row(world, dsn)
    named = {row.get("certificate_id", {}).get("S", "")}
    superseded = row.get("superseded", {}).get("M", {}).get("certificate_id", {}).get("S", "")
    named.add(superseded)
    work = {k[len("retire_") :] for k in row if k.startswith("retire_")}
    intent = row.get("intent", {}).get("M", {}).get("pca_certificate_arn", {}).get("S", "")
    if intent:
        ca = acmpca_backends[ACCOUNT][REGION].certificate_authorities[world.env["CA_ARN"]]
        pem = ca.issued_certificates.get(intent)
        if pem is not None:
            work.add(certificate_facts(pem.decode()).iot_certificate_id)
    problems = []
    for cert in _active(world, dsn):
        if cert in named - {""}:
            if cert == superseded and "sweep" not in row:
                problems.append("a superseded certificate the sweeper will not find")
            continue
        if cert not in work:
            problems.append(f"ACTIVE certificate {cert[:12]} named nowhere on the row")
        elif "sweep" not in row:
            problems.append(f"ACTIVE certificate {cert[:12]} left to a sweeper that never looks")
    return problems


def _attachment_problems(world: World, dsn: str) -> list[str]:
    """Each ACTIVE certificate is attached to this thing and to no other."""
    thing = world.services.settings.thing_name(dsn)
    problems = []
    principals = iot_backends[ACCOUNT][REGION].principal_things
    for cert in _active(world, dsn):
        things = {name for principal, name in principals if principal.endswith("/" + cert)}
        if things != {thing}:
            problems.append(f"an ACTIVE certificate attached to {sorted(things)}")
    return problems


def _audit_entries(world: World, dsn: str, event: str, pk: str = "", **details: str) -> list[Any]:
    items = world.dynamodb.query(
        TableName=world.env["AUDIT_TABLE"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": pk or f"device#{dsn}"}},
    )["Items"]
    return [
        item
        for item in items
        if item["event"]["S"] == event
        and all(item.get(k, {}).get("S") == v for k, v in details.items())
    ]


def _published() -> list[tuple[str, bytes]]:
    return list(iotdata_backends[ACCOUNT][REGION].published_payloads)


class _environment:
    """os.environ with these variables set, for one block."""

    def __init__(self, variables: dict[str, str]) -> None:
        self.variables = variables
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for name, value in self.variables.items():
            self.saved[name] = os.environ.get(name)
            os.environ[name] = value

    def __exit__(self, *_: object) -> None:
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --------------------------------------------------------------------------- the test


# Hypothesis shrinks a failure for up to 5 minutes: let it finish and print the shortest sequence.
@pytest.mark.timeout(900)
def test_the_device_lifecycle_keeps_its_invariants(
    world: World, stack: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    machine = lifecycle_machine(world, stack)
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                derandomize=not SOAK,
                database=None,
                suppress_health_check=list(HealthCheck),
                print_blob=False,
                # No "explain" phase: on Python < 3.12 it traces every line (sys.settrace),
                # which makes each step many times slower.
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
            ),
        )
    finally:
        if SOAK:  # what the soak ran, past pytest's capture
            with capsys.disabled():
                print()
                for n, trace in enumerate(STATS.traces, 1):
                    print(f"  sequence {n}: {trace}")
                print(STATS.report())
