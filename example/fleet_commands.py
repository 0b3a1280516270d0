"""The app's fleet commands: list devices, hand one over, claim one, release one; and, for an
administrator, who a user is.

    .venv/bin/python example/provisioning_app.py list     --state .local/stack.json [--all]
    .venv/bin/python example/provisioning_app.py transfer --state .local/stack.json SN-0001
    .venv/bin/python example/provisioning_app.py claim    --state .local/stack.json SN-0001
    .venv/bin/python example/provisioning_app.py release  --state .local/stack.json SN-0001 --yes
    .venv/bin/python example/provisioning_app.py user     --state .local/stack.json SUB|NAME|EMAIL

(``transfer --cancel [--decline]`` ends a handover; ``list --limit N`` pages.) This file is no
command of its own: run as a script, it runs the app with its arguments.

A transfer code is a secret until it is used: ``claim`` and ``transfer --cancel --decline`` read
it at a prompt (not echoed) or, when standard input is not a terminal, from its next line,
never from the command line, where ``ps`` and shell history would show it. So does the
password with ``--password-stdin`` (its line comes first); ``--password`` stays for scripts
that accept that it is visible.

They talk to the API only (no BLE), except ``user``, which asks the user pool with the
administrator's AWS credentials (user_lookup.py) and signs in to nothing. After a claim the new
owner provisions the device over BLE with the app's default command, as for a new device.
``provisioning_app.main`` hands these commands here; ``run`` takes plain values so tests call
it directly.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import user_lookup

from onboarding_ble import protocol
from onboarding_ble.protocol import ProtocolError

COMMANDS = ("list", "transfer", "claim", "release", "user")
# The app's command as its usage lines print it: it runs so from the repository's root.
PROG = ".venv/bin/python example/provisioning_app.py"
EXIT_OK, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_API = 0, 2, 3, 4
MAX_PAGES = 1000  # --all stops here: a bound, not a fleet size


class FleetError(Exception):
    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == 200

    def error(self, doing: str) -> FleetError:
        msg = str(self.body.get("msg", "error"))
        return FleetError(EXIT_API, f"{doing}: {msg} ({self.body.get('code', self.status)})")


def call_api(
    api_url: str,
    id_token: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    query: dict[str, str] | None = None,
    timeout: float = 35.0,
) -> Answer:
    """One API call with the ID token; an error answer is an Answer too, never an exception."""
    url = api_url.rstrip("/") + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    if not url.startswith(("https://", "http://")):
        raise FleetError(EXIT_USAGE, f"API URL must be http(s): {api_url}")
    headers = {"Authorization": id_token}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return Answer(response.status, _object(response.read()))
    except urllib.error.HTTPError as exc:
        parsed = _object(exc.read())
        parsed.setdefault("msg", exc.reason or "error")
        parsed.setdefault("code", f"HTTP_{exc.code}")
        return Answer(exc.code, parsed)
    except (urllib.error.URLError, TimeoutError) as exc:
        raise FleetError(EXIT_API, f"API unreachable: {exc}") from exc


def _object(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


# --------------------------------------------------------------------------- the commands


def list_devices(
    api_url: str,
    token: str,
    *,
    limit: int | None = None,
    every_page: bool = False,
    owner: str | None = None,
    status: str | None = None,
    expiring_before: str | None = None,
    next_token: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """The devices of one page (every page with ``every_page``) and the next page's token."""
    query = {
        name: value
        for name, value in (
            ("limit", str(limit) if limit else None),
            ("owner", owner),
            ("status", status),
            ("expiringBefore", expiring_before),
        )
        if value
    }
    devices: list[dict[str, Any]] = []
    token_in = next_token
    for _ in range(MAX_PAGES):
        answer = call_api(
            api_url,
            token,
            "GET",
            "/devices",
            query=query | ({"nextToken": token_in} if token_in else {}),
        )
        if not answer.ok:
            raise answer.error("listing devices failed")
        devices += answer.body.get("devices", [])
        token_in = answer.body.get("nextToken")
        if not every_page or not token_in:
            return devices, token_in
    return devices, token_in


def start_transfer(api_url: str, token: str, dsn: str) -> dict[str, Any]:
    answer = call_api(api_url, token, "POST", f"/devices/{_path(dsn)}/transfer")
    if not answer.ok:
        raise answer.error("starting the transfer failed")
    return answer.body


def cancel_transfer(api_url: str, token: str, dsn: str, code: str | None = None) -> dict[str, Any]:
    body = {"code": code} if code else None
    answer = call_api(api_url, token, "DELETE", f"/devices/{_path(dsn)}/transfer", body)
    if not answer.ok:
        raise answer.error("cancelling the transfer failed")
    return answer.body


def claim(api_url: str, token: str, dsn: str, code: str) -> dict[str, Any]:
    answer = call_api(api_url, token, "POST", f"/devices/{_path(dsn)}/claim", {"code": code})
    if not answer.ok:
        raise answer.error("claiming the device failed")
    return answer.body


def release(api_url: str, token: str, dsn: str) -> dict[str, Any]:
    answer = call_api(api_url, token, "DELETE", f"/devices/{_path(dsn)}")
    if not answer.ok:
        raise answer.error("releasing the device failed")
    return answer.body


def _path(dsn: str) -> str:
    try:
        protocol.validate_dsn(dsn)
    except ProtocolError as exc:
        raise FleetError(EXIT_USAGE, str(exc)) from exc
    return dsn


# --------------------------------------------------------------------------- command line


def add_commands(subparsers: Any, common: list[argparse.ArgumentParser]) -> None:
    """The commands, each with its own --help; ``common``: backend and sign-in options."""
    listing = subparsers.add_parser(
        "list",
        parents=common,
        help="list your devices (all devices, for an administrator)",
        description="List devices, newest first: a member's own; an administrator's all, or "
        "one owner's, one status's, or those expiring before a date (soonest first).",
    )
    listing.add_argument("--limit", type=int, help="devices per page (1-100, API default 25)")
    listing.add_argument("--all", action="store_true", help="follow every page")
    listing.add_argument("--next-token", help="continue from a page's nextToken")
    listing.add_argument(
        "--owner",
        help="administrators: one user's devices (their sub; the `user` command finds it)",
    )
    listing.add_argument("--status", choices=("ACTIVE", "REVOKED"), help="administrators")
    listing.add_argument(
        "--expiring-before", help="administrators: certificates expiring before DATE (ISO-8601)"
    )
    listing.add_argument("--json", action="store_true", help="print the answer as JSON")

    transfer = subparsers.add_parser(
        "transfer",
        parents=common,
        help="hand a device you own to another user (prints a one-time code)",
        description="Start handing a device over: prints a one-time code to give the new "
        "owner, valid for minutes and a few tries. With --cancel, cancel a pending transfer "
        "(the owner or an administrator; the recipient declines with --code).",
    )
    transfer.add_argument("dsn", help="the device's serial number")
    transfer.add_argument("--cancel", action="store_true", help="cancel the pending transfer")
    transfer.add_argument(
        "--decline",
        action="store_true",
        help="with --cancel: decline a transfer you were offered; the code is read at a "
        "prompt, or from standard input's next line",
    )

    claiming = subparsers.add_parser(
        "claim",
        parents=common,
        help="become a device's owner with the code its owner gave you",
        description="Claim a device with its DSN and transfer code. The code is read at a "
        "prompt (not echoed) or, when standard input is not a terminal, from its next line; "
        "never from the command line. The device's certificate is revoked: provision it again "
        "over BLE (the app's default command) to bring it online.",
    )
    claiming.add_argument("dsn", help="the device's serial number")

    releasing = subparsers.add_parser(
        "release",
        parents=common,
        help="give a device up: revoke its certificate and remove you as its owner",
        description="Release a device: its certificate is revoked, its thing leaves the fleet's "
        "group and it has no owner, so anyone may provision it. The audit trail stays.",
    )
    releasing.add_argument("dsn", help="the device's serial number")
    releasing.add_argument(
        "--yes", action="store_true", help="do it without asking (required when not a terminal)"
    )

    who = subparsers.add_parser(
        "user",
        parents=[backend_parser()],
        help="administrators: the user behind an owner sub, or the sub of a user name or email",
        description="Look a user up in the stack's user pool (Cognito ListUsers, an exact "
        "filter): the user name, email and status behind an owner's sub, or the sub of a user "
        "name or email. Needs AWS credentials allowed cognito-idp:ListUsers on the pool (offline: "
        "none, the emulator's are used); signs in to nothing. Exit 3 when no user matches.",
    )
    who.add_argument("query", help="a sub (as `list` shows owners), a user name or an email")
    who.add_argument("--json", action="store_true", help="print the users as JSON")


@dataclass(frozen=True)
class Hooks:
    """What the app's main module lends: where the backend is, who signs in, the sign-in
    (each raising FleetError, the app's one error, for what goes wrong)."""

    resolve_backend: Callable[[argparse.Namespace], Any]
    credentials_for: Callable[[argparse.Namespace, Any], tuple[str, str]]
    login: Callable[[Any, str, str], str]


def run(args: argparse.Namespace, hooks: Hooks, out: Any = None) -> int:
    """Run one fleet command; print its result; errors as one line and an exit code."""
    out = out or sys.stdout
    try:
        if args.command == "user":
            look_up_user(args, _user_pool(args, hooks), out)
            return EXIT_OK
        if args.command == "release" and not args.yes:
            if not sys.stdin.isatty():
                raise FleetError(EXIT_USAGE, "release: add --yes to release without a prompt")
            if input(f"Release {args.dsn}? Its certificate is revoked. [y/N] ").lower() != "y":
                raise FleetError(EXIT_USAGE, "release: not confirmed")
        read_password_stdin(args)
        if args.command == "claim" or (args.command == "transfer" and args.decline):
            if args.command == "transfer" and not args.cancel:
                raise FleetError(EXIT_USAGE, "--decline goes with --cancel")
            args.code = _secret_line(f"Transfer code for {args.dsn}: ", "no transfer code given")
        backend = hooks.resolve_backend(args)
        username, password = hooks.credentials_for(args, backend)
        token = hooks.login(backend, username, password)
        _dispatch(args, backend.api_url, token, out)
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return EXIT_OK


@dataclass(frozen=True)
class UserPool:
    """Where ``user`` looks: the pool, its Region (None: the AWS CLI's), the emulator."""

    user_pool_id: str
    region: str | None
    cognito_endpoint_url: str | None = None


def _user_pool(args: argparse.Namespace, hooks: Hooks) -> UserPool:
    """``--user-pool-id`` is enough for ``user``; the API and app client are not needed."""
    from botocore.exceptions import BotoCoreError, NoCredentialsError, NoRegionError

    if args.state or args.stack:
        try:
            backend = hooks.resolve_backend(args)
        except NoRegionError as exc:
            raise FleetError(EXIT_USAGE, "no AWS Region: pass --region or set AWS_REGION") from exc
        except NoCredentialsError as exc:
            raise FleetError(
                EXIT_API, "no AWS credentials: reading the stack needs cloudformation access"
            ) from exc
        except BotoCoreError as exc:
            raise FleetError(
                EXIT_API, f"reading the stack failed: AWS unreachable ({type(exc).__name__})"
            ) from exc
        return UserPool(backend.user_pool_id, backend.region, backend.cognito_endpoint_url)
    if args.user_pool_id:
        # A pool id begins with its Region ("eu-west-1_AbCdEf123").
        region = args.region or args.user_pool_id.partition("_")[0] or None
        return UserPool(args.user_pool_id, region, args.cognito_endpoint_url)
    raise FleetError(EXIT_USAGE, "say where the user pool is: --state, --stack or --user-pool-id")


def look_up_user(args: argparse.Namespace, backend: UserPool, out: Any) -> None:
    """``user``: the matching users, one line each (or JSON); FleetError when none or on error."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        client = user_lookup.cognito_client(backend.region, backend.cognito_endpoint_url)
        users = user_lookup.find_users(client, backend.user_pool_id, args.query)
    except user_lookup.QueryError as exc:
        raise FleetError(EXIT_USAGE, str(exc)) from exc
    except NoCredentialsError as exc:
        raise FleetError(
            EXIT_API, "no AWS credentials: the lookup needs cognito-idp:ListUsers on the pool"
        ) from exc
    except ClientError as exc:  # the service refused: its code, never the request's content
        code = exc.response.get("Error", {}).get("Code", "unknown")
        raise FleetError(EXIT_API, f"looking up the user failed: Cognito answered {code}") from exc
    except BotoCoreError as exc:  # no answer: unreachable, timed out
        raise FleetError(
            EXIT_API, f"looking up the user failed: Cognito unreachable ({type(exc).__name__})"
        ) from exc
    if not users:
        raise FleetError(EXIT_NOT_FOUND, f"no user {args.query} in pool {backend.user_pool_id}")
    if args.json:
        print(json.dumps({"users": [vars(user) for user in users]}, indent=2), file=out)
        return
    for user in users:
        print(user.line(), file=out)


def read_password_stdin(args: argparse.Namespace) -> None:
    """With ``--password-stdin``, the password is standard input's first line."""
    if args.password_stdin:
        if args.password:
            raise FleetError(EXIT_USAGE, "use one of --password and --password-stdin")
        args.password = _secret_line("", "--password-stdin: no password on standard input")


def _secret_line(prompt: str, missing: str) -> str:
    """A secret from a prompt that does not echo it, or from standard input's next line."""
    ask = bool(prompt) and sys.stdin.isatty()
    try:
        value = getpass.getpass(prompt) if ask else sys.stdin.readline()
    except EOFError:
        value = ""
    value = value.strip("\r\n")
    if not value.strip():
        raise FleetError(EXIT_USAGE, missing)
    return value


def _dispatch(args: argparse.Namespace, api_url: str, token: str, out: Any) -> None:
    if args.command == "list":
        if args.limit is not None and not 1 <= args.limit <= 100:
            raise FleetError(EXIT_USAGE, "--limit must be 1-100")
        devices, next_token = list_devices(
            api_url,
            token,
            limit=args.limit,
            every_page=args.all,
            owner=args.owner,
            status=args.status,
            expiring_before=args.expiring_before,
            next_token=args.next_token,
        )
        if args.json:
            page: dict[str, Any] = {"devices": devices}
            if next_token:
                page["nextToken"] = next_token
            print(json.dumps(page, indent=2), file=out)
            return
        for device in devices:
            pending = " (transfer pending)" if device.get("transferPending") else ""
            owner = f" owner={device['owner']}" if "owner" in device else ""
            print(
                f"{device['DSN']}\t{device['status']}\tnotAfter={device.get('notAfter') or '-'}"
                f"{owner}{pending}",
                file=out,
            )
        print(f"{len(devices)} device(s)", file=out)
        if next_token:
            print(f"more: --next-token {next_token}", file=out)
    elif args.command == "transfer" and args.cancel:
        cancel_transfer(api_url, token, args.dsn, args.code if args.decline else None)
        print(f"transfer of {args.dsn} cancelled", file=out)
    elif args.command == "transfer":
        started = start_transfer(api_url, token, args.dsn)
        print(f"transfer code for {args.dsn}: {started['transferCode']}", file=out)
        print(
            f"give it to the new owner; valid until {started['expiresAt']}, "
            f"{started['maxAttempts']} tries",
            file=out,
        )
    elif args.command == "claim":
        claimed = claim(api_url, token, args.dsn, args.code)
        print(f"{args.dsn} is yours now (status {claimed['status']})", file=out)
        print("provision it over BLE to bring it online", file=out)
    elif args.command == "release":
        released = release(api_url, token, args.dsn)
        state = "released" if released.get("finished") else "released (clean-up finishing)"
        print(f"{args.dsn} {state}", file=out)


def backend_parser() -> argparse.ArgumentParser:
    """Where the backend is: the options of every command."""
    backend = argparse.ArgumentParser(add_help=False)
    where = backend.add_argument_group("backend (one of)")
    where.add_argument("--state", type=Path, help="offline stack state file (.local/stack.json)")
    where.add_argument("--stack", help="deployed CloudFormation stack name")
    where.add_argument("--api-url", help="API base URL including the stage")
    where.add_argument("--user-pool-id", help="Cognito user pool id (Output UserPoolId)")
    where.add_argument("--client-id", help="user pool app client id (public, no secret)")
    where.add_argument("--region", help="AWS region of the stack (default: the CLI's)")
    where.add_argument("--cognito-endpoint-url", help=argparse.SUPPRESS)
    return backend


def common_parsers() -> list[argparse.ArgumentParser]:
    """Where the backend is and who signs in: the options of every command of the app that
    signs in, the BLE one included."""
    common = argparse.ArgumentParser(add_help=False, parents=[backend_parser()])
    user = common.add_argument_group("sign-in")
    user.add_argument("--username", help="default: ONBOARDING_USERNAME, or the offline admin")
    user.add_argument(
        "--password",
        help="VISIBLE to ps and shell history: prefer ONBOARDING_PASSWORD, --password-stdin or "
        "the prompt (the default: ONBOARDING_PASSWORD, the offline admin's, or a prompt)",
    )
    user.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input's first line",
    )
    return [common]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The app's fleet commands (no BLE): list, transfer, claim, release, user.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_commands(subparsers, common_parsers())
    return parser


def main(argv: Sequence[str], hooks: Hooks) -> int:
    args = build_parser().parse_args(list(argv))
    return run(args, hooks)


if __name__ == "__main__":
    # Run as a script, this file is the app: `--help` lists the fleet commands, and a command
    # runs as `provisioning_app.py COMMAND` would run it (the app's sign-in and backend).
    import provisioning_app

    arguments = sys.argv[1:]
    if not arguments or arguments[0] not in COMMANDS:
        build_parser().parse_args(arguments)  # --help, or a usage error naming the commands
    sys.exit(provisioning_app.main(arguments))
