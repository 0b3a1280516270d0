"""The attestation over BLE (docs/ble-protocol.md 3.1.2), through bumble's GATT on a virtual
link in this process: the app writes the API's challenge to ATTESTATION_CHALLENGE, then reads
DEVICE_ATTESTATION, a signature over the DSN, that challenge and the key to certify."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import provisioning_app as app
from bumble.controller import Controller
from bumble.device import Device
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from onboarding_ble.gatt import OnboardingService, OnboardingServiceProxy, ProvisioningSession
from provisioning.domain import attestation
from tests.unit.test_provisioning_app_api import RATE_LIMITED, FakeApi, serve  # noqa: F401

DSN = "SN-GATT-ATTEST"
DEVICE_ADDRESS = "F0:F1:F2:F3:F4:F5"


@asynccontextmanager
async def linked(session: ProvisioningSession) -> AsyncIterator[OnboardingServiceProxy]:
    """The device serving ``session`` and an app connected to it, on one virtual link."""
    link = LocalLink()  # type: ignore[no-untyped-call]
    radios = [Controller(name, link=link) for name in ("device", "app")]
    device, phone = (
        Device(address=Address(address), host=Host(radio, AsyncPipeSink(radio)))
        for address, radio in zip((DEVICE_ADDRESS, "F5:F4:F3:F2:F1:F0"), radios, strict=True)
    )
    service = OnboardingService(device, session)
    device.add_service(service)
    device.on(device.EVENT_CONNECTION, service.on_connection)
    await device.power_on()
    await phone.power_on()
    await device.start_advertising(auto_restart=True)
    proxy = await OnboardingServiceProxy.connect(phone, DEVICE_ADDRESS)
    try:
        yield proxy
    finally:
        service.provisioned.cancel()
        await proxy.close()


def verifies(
    key: ec.EllipticCurvePrivateKey, challenge: bytes, signature: bytes, spki: bytes
) -> bool:
    try:
        key.public_key().verify(
            signature, attestation.message(DSN, challenge, spki), ec.ECDSA(hashes.SHA256())
        )
    except Exception:
        return False
    return True


def test_the_app_writes_the_challenge_and_reads_a_signature_over_it(tmp_path: Path) -> None:
    factory = ec.generate_private_key(ec.SECP256R1())
    session = ProvisioningSession(DSN, [], tmp_path, attestation_key=factory)
    spki = attestation.x25519_spki_der(session.public_key)

    async def scenario() -> tuple[bool, bytes, bytes]:
        async with linked(session) as link:
            first = await link.attestation(bytes(range(32)))
            second = await link.attestation(bytes(range(32, 64)))
            return link.attests, first or b"", second or b""

    attests, first, second = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert attests
    # each signature covers the challenge written just before it, and only that one
    assert verifies(factory, bytes(range(32)), first, spki)
    assert verifies(factory, bytes(range(32, 64)), second, spki)
    assert not verifies(factory, bytes(range(32)), second, spki)


def test_a_device_without_a_factory_key_offers_no_challenge_and_no_attestation(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[bool, bytes | None]:
        async with linked(ProvisioningSession(DSN, [], tmp_path)) as link:
            return link.attests, await link.attestation(bytes(32))

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == (False, None)


def test_each_attempt_fetches_a_new_challenge_and_has_the_device_sign_it(
    serve: Callable[..., FakeApi],  # noqa: F811
) -> None:
    # GIVEN an API that gives a challenge, rate-limits the first certificate request, then
    # gives a second challenge and the certificate
    challenges = [bytes([1]) * 32, bytes([2]) * 32]
    api = serve(
        [
            (200, {}, {"challenge": base64.b64encode(challenges[0]).decode()}),
            (*RATE_LIMITED[:2], {**RATE_LIMITED[2], "code": "THROTTLED"}),
            (200, {}, {"challenge": base64.b64encode(challenges[1]).decode()}),
        ]
    )
    signed: list[bytes] = []

    async def device_signs(challenge: bytes) -> bytes:
        signed.append(challenge)
        return b"\x30" + challenge[:1] * 9

    async def no_sleep(_seconds: float) -> None:
        return None

    # WHEN the app asks for a certificate for a device that attests
    result = asyncio.run(
        app.request_certificate_with_retries(
            api.url, "id-token", DSN, b"k" * 32, attest=device_signs, sleep=no_sleep
        )
    )
    # THEN every attempt had its own challenge, signed by the device, sent with its signature
    assert result.ok and result.attempts == 2
    assert [r["path"] for r in api.requests] == [
        "/v1/certificate/challenge",
        "/v1/certificate",
        "/v1/certificate/challenge",
        "/v1/certificate",
    ]
    assert signed == challenges
    for request, challenge in zip(api.requests[1::2], challenges, strict=True):
        assert request["attestationChallenge"] == base64.b64encode(challenge).decode()
        assert request["attestation"] == base64.b64encode(b"\x30" + challenge[:1] * 9).decode()
    assert api.requests[0]["DSN"] == DSN


def test_a_refused_challenge_is_the_answer_and_nothing_is_asked_of_the_device(
    serve: Callable[..., FakeApi],  # noqa: F811
) -> None:
    api = serve([(403, {}, {"msg": "no", "code": "NOT_A_MEMBER"})])

    async def device_signs(_challenge: bytes) -> bytes:
        raise AssertionError("the device is not asked without a challenge")

    result = asyncio.run(
        app.request_certificate_with_retries(
            api.url, "id-token", DSN, b"k" * 32, attest=device_signs
        )
    )
    assert (result.status, result.body["code"]) == (403, "NOT_A_MEMBER")
    assert [r["path"] for r in api.requests] == ["/v1/certificate/challenge"]
