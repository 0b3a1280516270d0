"""The phone-app stand-in: sign in, find the device over BLE, get it a certificate.

    .venv/bin/python example/provisioning_app.py --transport tcp-client:127.0.0.1:PORT \
        --state .local/stack.json --dsn SN-0001

Signs in to Cognito (USER_PASSWORD_AUTH, public client: no secret), scans for devices that
advertise the onboarding service (docs/ble-protocol.md), reads the device's DSN and X25519
public key over GATT (for a device with a factory attestation key: fetches a challenge from
POST /certificate/challenge, writes it to the device and reads its attestation over it), calls
POST /certificate with the ID token and relays the answer to the device in chunks. A 429 is
retried after its Retry-After delay (at most 3 times, each wait at most 30 s, 60 s in all). An
API error is shown and written to the device (APP_ERROR) so the device stays unprovisioned and
says why. The API answer is never logged: it holds the encrypted key.

The GATT client is onboarding_ble.gatt's OnboardingServiceProxy; progress is printed as event
lines (onboarding_ble.events).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import email.utils
import getpass
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import fleet_commands
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from onboarding_ble import events, protocol, rules
from onboarding_ble.gatt import MissingService, OnboardingServiceProxy
from onboarding_ble.offline import OfflineStack, OfflineStateError
from onboarding_ble.protocol import ProtocolError, Status, StatusReport

logger = logging.getLogger("app")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NO_DEVICE = 3
EXIT_API = 4
EXIT_DEVICE_REJECTED = 5
EXIT_BLE = 6


# One error for the whole app, its BLE command and its fleet commands: a line and an exit code.
AppError = fleet_commands.FleetError


@dataclass(frozen=True)
class Backend:
    """Where the API and the user pool are (deployed stack or offline state file)."""

    api_url: str
    region: str
    user_pool_id: str
    client_id: str
    cognito_endpoint_url: str | None = None
    default_username: str | None = None
    default_password: str | None = None


# A 429 from the API is retried after its Retry-After delay, within these bounds.
RATE_LIMIT_RETRIES = 3  # retries after the first call
RATE_LIMIT_MAX_WAIT = 30.0  # seconds: a longer Retry-After is cut to this
RATE_LIMIT_BUDGET = 60.0  # seconds of waiting in all; past it the app gives up
RATE_LIMIT_DEFAULT_WAIT = 1.0  # seconds, when Retry-After is missing or unreadable


@dataclass(frozen=True)
class ApiResult:
    status: int
    body: dict[str, Any]
    retry_after: str | None = None  # the Retry-After header of an error answer
    attempts: int = 1  # calls made, counting retries after 429

    @property
    def ok(self) -> bool:
        return self.status == 200


def backend_from_state(path: Path) -> Backend:
    try:
        stack = OfflineStack.load(path)
    except OfflineStateError as exc:
        raise AppError(EXIT_USAGE, str(exc)) from exc
    return Backend(
        api_url=stack.api_url,
        region=stack.region,
        user_pool_id=stack.user_pool_id,
        client_id=stack.client_id,
        cognito_endpoint_url=stack.endpoint_url,
        default_username=stack.admin_username,
        default_password=stack.admin_password,
    )


def backend_from_stack(stack_name: str, region: str | None) -> Backend:
    import boto3

    cfn = boto3.client("cloudformation", region_name=region)
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return Backend(
        api_url=outputs["ApiUrl"],
        region=cfn.meta.region_name,
        user_pool_id=outputs["UserPoolId"],
        client_id=outputs["UserPoolClientId"],
    )


def login(backend: Backend, username: str, password: str) -> str:
    """Cognito ID token for a public client (USER_PASSWORD_AUTH, no secret hash)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "cognito-idp", region_name=backend.region, endpoint_url=backend.cognito_endpoint_url
    )
    try:
        result = client.initiate_auth(
            AuthFlow="USER_PASSWORD_AUTH",
            ClientId=backend.client_id,
            AuthParameters={"USERNAME": username, "PASSWORD": password},
        )
    except client.exceptions.NotAuthorizedException as exc:
        raise AppError(EXIT_API, "sign-in failed: wrong user name or password") from exc
    except client.exceptions.UserNotFoundException as exc:
        raise AppError(EXIT_API, "sign-in failed: wrong user name or password") from exc
    except ClientError as exc:  # the service refused: its code, never the request's content
        code = exc.response.get("Error", {}).get("Code", "unknown")
        raise AppError(EXIT_API, f"sign-in failed: Cognito answered {code}") from exc
    except BotoCoreError as exc:  # no answer: unreachable, timed out
        raise AppError(
            EXIT_API, f"sign-in failed: Cognito unreachable ({type(exc).__name__})"
        ) from exc
    auth = result.get("AuthenticationResult")
    if not auth:
        challenge = result.get("ChallengeName", "unknown")
        raise AppError(EXIT_API, f"sign-in needs challenge {challenge}; finish it first")
    return str(auth["IdToken"])


@dataclass(frozen=True)
class Attestation:
    """What the app relays of a device's attestation: the API's challenge and the device's
    signature over it (DER)."""

    challenge: bytes
    signature: bytes


def request_certificate(
    api_url: str,
    id_token: str,
    dsn: str,
    public_key: bytes,
    encryption: str = rules.FERNET_X25519,
    timeout: float = 35.0,
    csr: str | None = None,
    attestation: Attestation | None = None,
) -> ApiResult:
    """POST /certificate: publicKey mode, or CSR mode when ``csr`` (PEM) is given (the answer
    then carries no key, and ``encryption`` does not apply); with the device's ``attestation``
    and the challenge it signs, when it serves one."""
    if csr is not None:
        fields = {"DSN": dsn, "csr": csr}
    else:
        fields = {"DSN": dsn, "publicKey": base64.b64encode(public_key).decode()}
        if encryption != rules.ENCRYPTION_SCHEMES[0]:  # the default; old APIs know no other
            fields["encryption"] = encryption
    if attestation is not None:  # only then: an API without attestation refuses the fields
        fields["attestation"] = base64.b64encode(attestation.signature).decode()
        fields["attestationChallenge"] = base64.b64encode(attestation.challenge).decode()
    return _post(api_url, "/certificate", id_token, fields, timeout)


def request_challenge(
    api_url: str, id_token: str, dsn: str, timeout: float = 35.0
) -> tuple[ApiResult, bytes]:
    """POST /certificate/challenge: a single-use challenge for this user and DSN, for the
    device to sign (docs/ble-protocol.md 3.1.2); the answer, and the challenge when it is ok."""
    result = _post(api_url, "/certificate/challenge", id_token, {"DSN": dsn}, timeout)
    if not result.ok:
        return result, b""
    try:
        challenge = base64.b64decode(str(result.body.get("challenge", "")), validate=True)
    except ValueError:
        challenge = b""
    if len(challenge) != protocol.CHALLENGE_LEN:
        raise AppError(EXIT_API, "the API's challenge is not 32 bytes of base64")
    return result, challenge


def _post(
    api_url: str, path: str, id_token: str, fields: dict[str, str], timeout: float
) -> ApiResult:
    url = api_url.rstrip("/") + path
    if not url.startswith(("https://", "http://")):
        raise AppError(EXIT_USAGE, f"API URL must be http(s): {api_url}")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=json.dumps(fields).encode(),
        method="POST",
        headers={"Authorization": id_token, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return ApiResult(response.status, json.loads(response.read() or b"{}"))
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        if not isinstance(parsed, dict):
            parsed = {}
        parsed.setdefault("msg", parsed.get("message") or exc.reason or "error")
        parsed.setdefault("code", f"HTTP_{exc.code}")
        return ApiResult(exc.code, parsed, retry_after=exc.headers.get("Retry-After"))
    except (urllib.error.URLError, TimeoutError) as exc:
        raise AppError(EXIT_API, f"API unreachable: {exc}") from exc


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), at least 0."""
    if value is None or not value.strip():
        return RATE_LIMIT_DEFAULT_WAIT
    text = value.strip()
    if text.isascii() and text.isdigit():  # "²".isdigit() is True, float("²") fails
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return RATE_LIMIT_DEFAULT_WAIT
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


async def request_certificate_with_retries(
    api_url: str,
    id_token: str,
    dsn: str,
    public_key: bytes,
    encryption: str = rules.FERNET_X25519,
    *,
    retries: int = RATE_LIMIT_RETRIES,
    max_wait: float = RATE_LIMIT_MAX_WAIT,
    budget: float = RATE_LIMIT_BUDGET,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    csr: str | None = None,
    attest: Callable[[bytes], Awaitable[bytes | None]] | None = None,
) -> ApiResult:
    """`request_certificate`, retried on 429 after Retry-After (bounded); other answers as is.

    ``attest``, for a device that attests: given a challenge, the device's signature over it
    (``OnboardingServiceProxy.attestation``). Each attempt then first asks the API for a new
    challenge (a challenge is used once, by the attempt that presents it) and the device for
    its signature.

    Each wait is at most `max_wait`, the waits add up to at most `budget`, and there are at
    most `retries` retries; then the last 429 is returned (its `attempts` says how many).
    """
    waited = 0.0
    attempt = 1
    while True:
        result = await _attested_request(
            api_url, id_token, dsn, public_key, encryption, csr, attest
        )
        if result.status != 429:
            return replace(result, attempts=attempt)
        wait = min(retry_after_seconds(result.retry_after), max_wait)
        if attempt > retries or waited + wait > budget:
            events.emit(events.RateLimitGaveUp(attempt))
            return replace(result, attempts=attempt)
        events.emit(events.RateLimited(result.retry_after or "-", wait, attempt, retries))
        await sleep(wait)
        waited += wait
        attempt += 1


async def _attested_request(
    api_url: str,
    id_token: str,
    dsn: str,
    public_key: bytes,
    encryption: str,
    csr: str | None,
    attest: Callable[[bytes], Awaitable[bytes | None]] | None,
) -> ApiResult:
    """One attempt: the challenge and the device's signature over it first, if it attests."""
    attestation = None
    if attest is not None:
        answer, challenge = request_challenge(api_url, id_token, dsn)
        if not answer.ok:
            return answer  # a refused challenge is the answer (a 429 is retried as any other)
        signature = await attest(challenge)
        if signature is not None:
            attestation = Attestation(challenge, signature)
    return request_certificate(
        api_url, id_token, dsn, public_key, encryption, csr=csr, attestation=attestation
    )


def refusal(result: ApiResult) -> AppError:
    """The error the app exits with when the API said no."""
    msg = str(result.body.get("msg", ""))
    code = str(result.body.get("code", ""))
    text = f"API refused ({result.status} {code}): {msg}"
    if result.status == 429:
        text += f"; still rate limited after {result.attempts} attempts, try again later"
    return AppError(EXIT_API, text)


# --- BLE -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppOptions:
    """How the app finds and provisions a device (``main`` builds it from the command line)."""

    transport: str  # HCI transport: tcp-client:127.0.0.1:PORT (virtual radio) or usb:0
    dsn: str | None = None  # only a device advertising this DSN
    address: str | None = None  # connect to this BLE address without scanning
    encryption: str | None = None  # None: the strongest the device and the app both support
    scan_time: float = 2.0  # seconds
    retries: int = 3  # reconnects on a cut link
    retry_delay: float = 0.5  # seconds before a reconnect
    status_timeout: float = 10.0  # seconds to wait for the device's verdict
    drop_after_chunks: int | None = None  # test hook: cut the link after this many chunks


@dataclass(frozen=True)
class Found:
    address: str
    dsn: str  # the DSN, or its prefix when `complete` is False
    complete: bool


async def scan(device: Any, dsn: str | None, seconds: float) -> list[Found]:
    """Devices advertising the onboarding service (and, with `dsn`, a DSN hint that fits it)."""
    from bumble.core import UUID, AdvertisingData

    service = UUID(protocol.SERVICE_UUID)
    hints: dict[str, tuple[str, bool]] = {}

    def better(address: str, hint: str, complete: bool) -> None:
        old = hints.get(address)
        if (
            old is None
            or (complete and not old[1])
            or (complete == old[1] and len(hint) > len(old[0]))
        ):
            hints[address] = (hint, complete)

    def on_advertisement(advertisement: Any) -> None:
        address = str(advertisement.address)
        data = advertisement.data
        for uuid, payload in data.get_all(AdvertisingData.Type.SERVICE_DATA_128_BIT_UUID):
            if uuid == service:
                try:
                    version, hint, complete = protocol.decode_service_data(bytes(payload))
                except ProtocolError:
                    continue
                if version == protocol.PROTOCOL_VERSION:
                    better(address, hint, complete)
        if address in hints:  # names only count for devices that advertise the service
            if (name := data.get(AdvertisingData.Type.COMPLETE_LOCAL_NAME)) is not None:
                better(address, str(name), True)
            elif (short := data.get(AdvertisingData.Type.SHORTENED_LOCAL_NAME)) is not None:
                better(address, str(short), False)

    device.on(device.EVENT_ADVERTISEMENT, on_advertisement)
    await device.start_scanning(active=True, filter_duplicates=False)
    await asyncio.sleep(seconds)
    await device.stop_scanning()
    device.remove_listener(device.EVENT_ADVERTISEMENT, on_advertisement)
    return [
        Found(address, hint, complete)
        for address, (hint, complete) in sorted(hints.items())
        if dsn is None or protocol.hint_may_match(dsn, hint, complete)
    ]


APP_SCHEMES = rules.ENCRYPTION_SCHEMES  # the schemes this app can ask the API for


def choose_scheme(device_schemes: tuple[str, ...] | None, wanted: str | None = None) -> str:
    """The key-encryption scheme to ask the API for (no downgrade by the app).

    A version-2 device says which schemes it accepts: the strongest this app also supports,
    or ``wanted`` if the device accepts it. A version-1 device does not say: ``wanted``, or
    fernet-x25519, the scheme every device implements. AppError rather than a certificate
    the device will refuse.
    """
    if device_schemes is None:
        return wanted or rules.FERNET_X25519
    common = [s for s in rules.ENCRYPTION_SCHEMES_BY_STRENGTH if s in device_schemes]
    common = [s for s in common if s in APP_SCHEMES]
    if wanted is not None:
        if wanted not in common:
            raise AppError(
                EXIT_DEVICE_REJECTED,
                f"the device does not accept {wanted} (it accepts {', '.join(device_schemes)})",
            )
        return wanted
    if not common:
        raise AppError(
            EXIT_DEVICE_REJECTED,
            f"no key-encryption scheme in common (the device accepts "
            f"{', '.join(device_schemes) or 'none this app knows'})",
        )
    return common[-1]


async def connect(device: Any, address: str) -> OnboardingServiceProxy:
    """The device's onboarding service; AppError when it has none."""
    try:
        return await OnboardingServiceProxy.connect(device, address)
    except MissingService as exc:
        raise AppError(EXIT_BLE, str(exc)) from exc


async def open_device(transport_spec: str) -> tuple[Any, Any]:
    from onboarding_ble.radio import open_host  # bumble loads only when the radio is used

    return await open_host(transport_spec, "provisioning-app")


async def find_target(device: Any, options: AppOptions) -> str:
    """The one device to provision; refuses to guess when several devices fit."""
    if options.address:
        return options.address
    found = await scan(device, options.dsn, options.scan_time)
    if options.dsn:
        matches = []
        for candidate in found:
            if candidate.complete:
                matches.append(candidate)  # hint_may_match already compared the whole DSN
                continue
            link = await connect(device, candidate.address)  # prefix only: ask it
            try:
                if (await link.device_info()).dsn == options.dsn:
                    matches.append(candidate)
            finally:
                await link.close()
        found = matches
    if not found:
        wanted = f" with DSN {options.dsn}" if options.dsn else ""
        raise AppError(EXIT_NO_DEVICE, f"no device{wanted} advertising the onboarding service")
    if len(found) > 1:
        listing = ", ".join(f"{f.address} ({f.dsn})" for f in found)
        events.emit(events.Ambiguous(len(found), listing))
        raise AppError(
            EXIT_NO_DEVICE,
            f"{len(found)} devices match: {listing}; pick one with --dsn or --address",
        )
    events.emit(events.Found(found[0].address, found[0].dsn))
    return found[0].address


def csr_pem(der: bytes) -> str:
    """The device's CSR as the API takes it (PEM); ProtocolError if it is not one."""
    try:
        return x509.load_der_x509_csr(der).public_bytes(Encoding.PEM).decode("ascii")
    except ValueError as exc:
        raise ProtocolError(Status.ERR_FORMAT, "DEVICE_CSR is not a CSR") from exc


async def provision(
    device: Any,
    address: str,
    options: AppOptions,
    api_url: str,
    get_token: Callable[[], str],
    answer_override: bytes | None = None,
) -> StatusReport:
    """Read the device, call the API, relay the answer; reconnect and resend on a cut link."""
    answer: bytes | None = answer_override
    answered_key: bytes | None = None
    drop_after = options.drop_after_chunks
    last_error: Exception | None = None
    for attempt in range(1, options.retries + 2):
        try:
            link = await connect(device, address)
        except AppError:
            raise
        except Exception as exc:
            last_error = exc
            logger.warning("connect attempt %d failed: %s", attempt, exc)
            await asyncio.sleep(options.retry_delay)
            continue
        try:
            info = await link.device_info()
            events.emit(events.DeviceRead(info.dsn, link.mtu))
            if options.dsn and info.dsn != options.dsn:
                raise AppError(EXIT_NO_DEVICE, f"device says DSN {info.dsn}, not {options.dsn}")
            if answer is None or (answer_override is None and answered_key != info.public_key):
                # First attempt, or the device rebooted (new key): ask the API (again).
                # CSR mode: the device made its own key; relay its CSR (checked against the
                # digest it announced). Otherwise the strongest key encryption in common.
                csr = None
                scheme = rules.FERNET_X25519
                if info.csr_mode:
                    csr = csr_pem(await link.device_csr(info))
                else:
                    scheme = choose_scheme(info.schemes, options.encryption)
                # A device with a factory key signs the API's challenge (fetched for this
                # user and DSN first) with the key just read; others attest nothing.
                result = await request_certificate_with_retries(
                    api_url,
                    get_token(),
                    info.dsn,
                    info.public_key,
                    scheme,
                    csr=csr,
                    attest=link.attestation if link.attests else None,
                )
                if not result.ok:
                    msg = str(result.body.get("msg", ""))
                    code = str(result.body.get("code", ""))
                    events.emit(events.ApiRefused(result.status, code, msg))
                    await link.control(protocol.encode_app_error(result.status, code, msg))
                    report = await link.final_status(options.status_timeout)
                    events.emit(events.StatusChanged(report.status.name, report.detail))
                    raise refusal(result)
                answer = json.dumps(result.body).encode()
                answered_key = info.public_key
                events.emit(events.ApiAnswered(str(result.body.get("thingName", ""))))
            await link.send(answer, drop_after)
            report = await link.final_status(options.status_timeout)
            events.emit(events.StatusChanged(report.status.name, report.detail))
            await link.close()
            return report
        except (AppError, ProtocolError):
            await link.close()
            raise
        except Exception as exc:
            last_error = exc
            drop_after = None
            logger.warning("transfer attempt %d failed: %s; retrying", attempt, exc)
            events.emit(events.Retry(attempt, type(exc).__name__))
            await link.close()
            await asyncio.sleep(options.retry_delay)
    raise AppError(EXIT_BLE, f"gave up after {options.retries + 1} attempts: {last_error}")


def resolve_backend(args: argparse.Namespace) -> Backend:
    """Where the backend is, from the command line (part of ``main``)."""
    if args.state:
        backend = backend_from_state(args.state)
    elif args.stack:
        backend = backend_from_stack(args.stack, args.region)
    elif args.api_url and args.user_pool_id and args.client_id:
        backend = Backend(
            api_url=args.api_url,
            region=args.region or "us-east-1",
            user_pool_id=args.user_pool_id,
            client_id=args.client_id,
            cognito_endpoint_url=args.cognito_endpoint_url,
        )
    else:
        raise AppError(
            EXIT_USAGE,
            "say where the backend is: --state FILE, --stack NAME, or "
            "--api-url --user-pool-id --client-id",
        )
    if args.api_url:
        backend = Backend(**{**backend.__dict__, "api_url": args.api_url})
    return backend


def credentials_for(args: argparse.Namespace, backend: Backend) -> tuple[str, str]:
    """User name and password, from the command line, the environment or a prompt."""
    username = args.username or os.environ.get("ONBOARDING_USERNAME") or backend.default_username
    if not username:
        raise AppError(EXIT_USAGE, "no user name: --username or ONBOARDING_USERNAME")
    password = args.password or os.environ.get("ONBOARDING_PASSWORD")
    if not password and username == backend.default_username:
        password = backend.default_password
    if not password:
        password = getpass.getpass(f"Password for {username}: ")
    return username, password


async def async_main(options: AppOptions, backend: Backend, username: str, password: str) -> int:
    try:
        token = login(backend, username, password)
        events.emit(events.SignedIn(username))
        hci_transport, device = await open_device(options.transport)
        try:
            address = await find_target(device, options)
            report = await provision(device, address, options, backend.api_url, lambda: token)
        finally:
            await hci_transport.close()
    except AppError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    if report.status is Status.PROVISIONED:
        events.emit(events.Provisioned(report.detail))
        return EXIT_OK
    print(
        f"error: device rejected the answer: {report.status.name} {report.detail}", file=sys.stderr
    )
    return EXIT_DEVICE_REJECTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=fleet_commands.PROG,
        parents=fleet_commands.common_parsers(),
        description="Phone-app stand-in: sign in, find a device over BLE, provision it.",
        epilog=f"Fleet commands (API only): {fleet_commands.PROG} "
        "{list,transfer,claim,release} --help; an administrator's user lookup (Cognito): "
        f"{fleet_commands.PROG} user --help",
    )
    parser.add_argument(
        "--transport",
        required=True,
        help="HCI transport: tcp-client:127.0.0.1:PORT (virtual radio) or usb:0",
    )
    target = parser.add_argument_group("device")
    target.add_argument("--dsn", help="only a device advertising this DSN")
    target.add_argument(
        "--encryption",
        choices=rules.ENCRYPTION_SCHEMES,
        help="how the API encrypts the device key (default: the strongest scheme the device "
        "says it accepts in DEVICE_INFO_V2; fernet-x25519 for a device that does not say)",
    )
    target.add_argument("--address", help="connect to this BLE address without scanning")
    target.add_argument("--scan-time", type=float, default=2.0, help="seconds (default 2)")
    target.add_argument("--retries", type=int, default=3, help="reconnects on a cut link")
    target.add_argument(
        "--retry-delay", type=float, default=0.5, help="seconds before a reconnect (default 0.5)"
    )
    target.add_argument(
        "--status-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the device's verdict after the last chunk (default 10)",
    )
    target.add_argument("--drop-after-chunks", type=int, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in fleet_commands.COMMANDS:  # list, transfer, claim, release, user
        hooks = fleet_commands.Hooks(resolve_backend, credentials_for, login)
        return fleet_commands.main(argv, hooks)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s app %(levelname)s %(message)s",
    )
    try:
        if args.dsn:
            protocol.validate_dsn(args.dsn)
        fleet_commands.read_password_stdin(args)
        backend = resolve_backend(args)
        username, password = credentials_for(args, backend)
    except ProtocolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AppError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    options = AppOptions(
        transport=args.transport,
        dsn=args.dsn,
        address=args.address,
        encryption=args.encryption,
        scan_time=args.scan_time,
        retries=args.retries,
        retry_delay=args.retry_delay,
        status_timeout=args.status_timeout,
        drop_after_chunks=args.drop_after_chunks,
    )
    return asyncio.run(async_main(options, backend, username, password))


if __name__ == "__main__":
    sys.exit(main())
