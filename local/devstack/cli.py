"""``.venv/bin/devstack``: the offline stack's command line (``make venv`` installs it).

Commands: up, down, user add, user list, login, ca-cert, sweep, expiry, state, logs. Each has
``--help``. Errors the user can fix print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from devstack import hints
from devstack.errors import DevstackError
from devstack.moto_bridges import lifetime
from devstack.stack import (
    DEFAULT_ADMIN_EMAIL,
    DEFAULT_STATE,
    DEFAULT_TEMPLATE,
    StackClient,
    read_state,
    remove_state,
    stack_process_alive,
    start_stack,
    wait_for,
)
from devstack.users import GROUPS, add_user, list_users, login
from tools import params as params_module

Command = Callable[[argparse.Namespace], int]
_Subparsers = Any  # argparse's _SubParsersAction is private


def stack_parameters(args: argparse.Namespace) -> dict[str, str]:
    """The template parameters ``deploy_options`` asked for: config.json, then the overrides."""
    config = None if args.no_config else Path(args.config)
    overrides = params_module.parse_overrides(args.parameter_overrides)
    overrides.setdefault("AdminEmail", args.admin_email)
    return params_module.resolve_parameters(config, overrides)


# -- up / down ------------------------------------------------------------------------------


def _cmd_up(args: argparse.Namespace) -> int:
    state_path = Path(args.state)
    if state_path.exists():
        try:
            state = read_state(state_path)
        except DevstackError:
            state = {}
        pid = int(state.get("pid") or 0)
        if pid and pid != os.getpid() and stack_process_alive(state):
            raise DevstackError(
                f"a stack is already up (pid {pid}, {state_path}); stop it first with "
                f"{_down_hint(state_path)}"
            )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    log_dir = logs_dir(state_path)
    log_file = _quiet_terminal(log_dir)
    try:
        stack = start_stack(
            template=Path(args.template),
            parameters=stack_parameters(args),
            region=args.region,
            api_port=args.port,
            moto_port=args.moto_port,
            mqtt_port=args.mqtt_port,
            state_path=state_path,
            progress=print if args.verbose else None,
            build_progress=print,  # the first build of the functions' packages takes a while
            throttle=not args.no_throttle,
            quotas=args.quotas,
            cert_lifetime=args.cert_lifetime,
            app_port=args.app_port,
            lambda_log_dir=log_dir,  # beside the state file, where `logs` looks
        )
        try:
            outputs = stack.outputs
            print(f"offline stack up (pid {os.getpid()}); state in {state_path}")
            browser_hint = hints.browser(state=state_path)
            print(
                f"  phone app      {stack.app_url}  (`{browser_hint}`: Chromium, its Web"
                " Bluetooth bridged to a virtual radio)"
            )
            print(f"  API            {stack.api_url}  (POST {stack.api_url}/certificate)")
            print(f"  AWS (moto)     {stack.endpoint_url}  region {args.region}")
            print(f"  limits         {_limits_line(stack.throttle is not None, args.quotas)}")
            if args.cert_lifetime is not None:
                shown = lifetime.describe(args.cert_lifetime)
                print(f"  certificates   device certificates valid for {shown} (--cert-lifetime)")
            if stack.mqtt is not None:
                mqtt = stack.mqtt
                print(f"  MQTT (mTLS)    {mqtt.host}:{mqtt.port}  server CA {mqtt.ca_file}")
            print(f"  user pool      {outputs.get('UserPoolId')}")
            print(f"  app client     {outputs.get('UserPoolClientId')}")
            admin = stack.deployment.admin_username or ""
            login_hint = hints.command("login", admin.split("#", 1)[0], state=state_path)
            print(f"  administrator  {admin} (`{login_hint}`)")
            logs_hint = hints.command("logs", "--follow", state=state_path)
            print(f"  logs           {log_dir}/ (`{logs_hint}`)")
            print(f"Ctrl-C, {_down_hint(state_path)} stops it.", flush=True)
            stop.wait()
        finally:
            stack.stop()
        print("offline stack stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _restore_terminal(log_file)
    return 0


def _down_hint(state_path: Path) -> str:
    """`make down` stops the stack of the default state file only."""
    down = f"`{hints.command('down', state=state_path)}`"
    return f"`make down` or {down}" if state_path == hints.DEFAULT_STATE else down


def _limits_line(throttled: bool, quotas: bool) -> str:
    throttle = "stage throttle from the template" if throttled else "no stage throttle"
    quota = "AWS API quotas applied" if quotas else "no AWS API quotas (--quotas applies them)"
    return f"{throttle}; {quota}"


def logs_dir(state_path: Path) -> Path:
    """Where the stack's logs go: ``logs/`` beside the state file (.local/logs by default).
    The Lambda functions write ``<FunctionLogicalId>.log`` there, the broker ``mqtt-broker.log``,
    and library warnings and everything else logged in ``up`` go to ``devstack.log``."""
    return state_path.parent / "logs"


def _quiet_terminal(log_dir: Path) -> logging.Handler:
    """Library warnings and log records of ``up`` go to ``devstack.log``, not the terminal."""
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / "devstack.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    return handler


def _restore_terminal(handler: logging.Handler) -> None:
    logging.captureWarnings(False)
    logging.getLogger().removeHandler(handler)
    handler.close()


def _cmd_down(args: argparse.Namespace) -> int:
    """Stop the stack; with none up there is nothing to do, and that is no error."""
    state_path = Path(args.state)
    if not state_path.exists():
        print(f"no offline stack is up (no {state_path}): nothing to stop")
        return 0
    state = read_state(state_path)
    pid = int(state.get("pid") or 0)
    if not stack_process_alive(state):
        remove_state(state_path)
        print(f"no offline stack is up (pid {pid} is gone): removed its stale {state_path}")
        return 0
    os.kill(pid, signal.SIGTERM)
    if not wait_for(lambda: not state_path.exists(), timeout=args.timeout):
        raise DevstackError(f"pid {pid} did not stop within {args.timeout:g} s")
    print(f"offline stack (pid {pid}) stopped")
    return 0


# -- users ----------------------------------------------------------------------------------


def _connected(args: argparse.Namespace) -> StackClient:
    client = StackClient(Path(args.state))
    client.check_up()
    return client


def _cmd_user_add(args: argparse.Namespace) -> int:
    stack = _connected(args)
    password = add_user(
        stack.client("cognito-idp"),
        stack.outputs["UserPoolId"],
        args.name,
        email=args.email,
        group=args.group,
        password=args.password,
    )
    print(f"user {args.name} added to {args.group}")
    if args.password is None:
        print(f"password {password}")
    return 0


def _cmd_user_list(args: argparse.Namespace) -> int:
    stack = _connected(args)
    users = list_users(stack.client("cognito-idp"), stack.outputs["UserPoolId"])
    print(f"{'USERNAME':<24} {'GROUPS':<24} {'STATUS':<20} EMAIL")
    for user in users:
        print(f"{user['username']:<24} {user['groups']:<24} {user['status']:<20} {user['email']}")
    return 0


def _cmd_login(args: argparse.Namespace) -> int:
    stack = _connected(args)
    password = args.password
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise DevstackError("--password-stdin: nothing on standard input")
    admin = stack.state.get("admin") or {}
    name = args.name
    admin_name = str(admin.get("username") or "")
    # The administrator's username is <AdminUsername>#<e-mail>: its first part names it too.
    if admin_name and name in (admin_name, admin_name.split("#", 1)[0]):
        name = admin_name
        if password is None:
            password = admin.get("password")
    if password is None:
        if not sys.stdin.isatty():
            raise DevstackError(
                f"no password for {name} and no terminal to ask on; "
                "pipe it in with --password-stdin"
            )
        try:
            password = getpass.getpass(f"password for {name}: ")
        except EOFError:
            raise DevstackError("no password given") from None
    tokens = login(stack.client("cognito-idp"), stack.outputs["UserPoolClientId"], name, password)
    print(tokens.id_token)
    return 0


# -- what a device needs: the pinned CA; the logs ----------------------------------------------


def _cmd_ca_cert(args: argparse.Namespace) -> int:
    stack = _connected(args)
    answer = stack.client("acm-pca").get_certificate_authority_certificate(
        CertificateAuthorityArn=stack.outputs["CertificateAuthorityArn"]
    )
    pem = answer["Certificate"].strip() + "\n"
    if args.out is None:
        print(pem, end="")
    else:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(pem, encoding="utf-8")
        print(f"the root CA certificate devices pin is in {out}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    """Run the sweeper now, as `aws lambda invoke` would in AWS, and print what it fixed."""
    # The sweeper may run for its whole Timeout (60 s): wait longer than that for its answer.
    return _run_function(args, "SweeperFunctionName", read_timeout=90)


def _cmd_expiry(args: argparse.Namespace) -> int:
    """Run the expiry watch now, as `aws lambda invoke` would in AWS, and print its report."""
    # The watch may run for its whole Timeout (120 s): wait longer than that for its answer.
    return _run_function(args, "ExpiryWatchFunctionName", read_timeout=150)


THROTTLED_WAITS = (1.0, 2.0, 4.0, 8.0)  # seconds before asking a busy function again


def _run_function(args: argparse.Namespace, output: str, read_timeout: int) -> int:
    """Invoke the function named by the stack output ``output`` once and print its answer.

    One attempt only (a retry after a timeout would run it twice), except while Lambda
    throttles the call (another run holds the function's reserved concurrency): then it has
    not run, and it is asked again a few times, as the AWS CLI's retries would.
    """
    stack = _connected(args)
    state = read_state(Path(args.state))
    lambda_client = stack.client(
        "lambda", state["lambda_url"], read_timeout=read_timeout, retries={"total_max_attempts": 1}
    )
    name = stack.outputs[output]
    for wait in (*THROTTLED_WAITS, None):
        try:
            answer = lambda_client.invoke(FunctionName=name, Payload=b"{}")
            break
        except lambda_client.exceptions.TooManyRequestsException:
            if wait is None:
                raise DevstackError(
                    f"{name} is still busy with another run (its reserved concurrency); "
                    "try again when it has finished"
                ) from None
            print(f"{name} is busy with another run; asking again in {wait:g} s", file=sys.stderr)
            time.sleep(wait)
    payload = json.loads(answer["Payload"].read())
    print(json.dumps(payload, indent=2))
    return 1 if answer.get("FunctionError") else 0


def _cmd_state(args: argparse.Namespace) -> int:
    """One value of the state file (``api_url``, ``mqtt.port``, ``outputs.UserPoolId``...)."""
    value: Any = read_state(Path(args.state))
    for part in args.key.split("."):
        if not isinstance(value, dict) or part not in value:
            known = ", ".join(sorted(value)) if isinstance(value, dict) else "none"
            raise DevstackError(f"the state file has no {args.key!r} (at {part!r}: {known})")
        value = value[part]
    print(value if isinstance(value, str | int | float) else json.dumps(value, indent=2))
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from devstack.logs import follow, log_files

    directory = Path(args.dir) if args.dir else logs_dir(Path(args.state))
    files = log_files(directory, args.function)
    if args.follow:
        follow(files, sys.stdout)
    else:
        for path in files:
            if len(files) > 1:
                print(f"==> {path} <==")
            print(path.read_text(encoding="utf-8", errors="replace"), end="")
    return 0


# -- the parser -----------------------------------------------------------------------------


def _state_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        default=str(DEFAULT_STATE),
        help=f"state file of the running stack (default {DEFAULT_STATE})",
    )


def deploy_options(parser: argparse.ArgumentParser) -> None:
    """What is deployed: the template, config.json and overrides (``up``'s, and the demo's)."""
    parser.add_argument("--template", default=str(DEFAULT_TEMPLATE), help="SAM template")
    parser.add_argument(
        "--config",
        default=str(params_module.DEFAULT_CONFIG),
        help="config.json with the original sample's keys (default %(default)s)",
    )
    parser.add_argument("--no-config", action="store_true", help="ignore config.json")
    parser.add_argument(
        "--admin-email", default=DEFAULT_ADMIN_EMAIL, help="AdminEmail (default %(default)s)"
    )
    parser.add_argument(
        "--parameter-overrides",
        nargs="*",
        default=[],
        metavar="Key=Value",
        help="template parameters; they win over config.json",
    )
    parser.add_argument("--region", default="us-east-1", help="region (default %(default)s)")


def _port(text: str) -> int:
    """A TCP port for ``up``'s servers: 0 (a free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: 1-65535, or 0 for a free one")
    return port


def _cert_lifetime(text: str) -> timedelta:
    try:
        return lifetime.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=hints.COMMAND,
        description="The offline stack: the whole application on this machine, no AWS account.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="start moto, deploy template.yaml, serve the API; run until Ctrl-C",
        description="Start the offline stack on 127.0.0.1 and run until Ctrl-C or SIGTERM.",
    )
    deploy_options(up)
    _state_option(up)
    up.add_argument("--port", type=_port, default=0, help="API gateway port (default: free port)")
    up.add_argument("--moto-port", type=_port, default=0, help="moto port (default: free port)")
    up.add_argument(
        "--mqtt-port", type=_port, default=0, help="MQTT broker port (default: free port)"
    )
    up.add_argument(
        "--app-port",
        type=_port,
        default=0,
        help="port of the phone app (webapp/) on 127.0.0.1 (default: free port); the API's "
        "CORS allows that origin (AppOrigin)",
    )
    up.add_argument(
        "--quotas",
        action="store_true",
        help="apply AWS's default API quotas to the emulated services (ThrottlingException "
        "beyond them), e.g. IoT RegisterCertificate 10/s; see docs/offline-stack.md",
    )
    up.add_argument(
        "--no-throttle",
        action="store_true",
        help="do not apply the template's stage throttling at the gateway (on by default, as "
        "in AWS)",
    )
    up.add_argument(
        "--cert-lifetime",
        type=_cert_lifetime,
        metavar="DURATION",
        help="issue device certificates valid for this long (1m-24h, e.g. 10m) instead of "
        "DeviceCertValidityDays, to watch renewal and expiry in minutes (offline only; see "
        "docs/offline-stack.md)",
    )
    up.add_argument("-v", "--verbose", action="store_true", help="print each resource created")
    up.set_defaults(func=_cmd_up)

    down = commands.add_parser(
        "down", help="stop a running `up`", description="Stop the `up` named in the state file."
    )
    _state_option(down)
    down.add_argument(
        "--timeout", type=float, default=15.0, help="seconds to wait (default %(default)s)"
    )
    down.set_defaults(func=_cmd_down)

    user = commands.add_parser(
        "user", help="add or list app users", description="Manage the app users of the stack."
    )
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_commands.add_parser(
        "add",
        help="add a user with a permanent password",
        description="Create a user in the Cognito pool and put it in a group.",
    )
    add.add_argument("name", help="username")
    add.add_argument("--email", required=True, help="e-mail address")
    add.add_argument("--group", choices=GROUPS, default="Members", help="group (default Members)")
    add.add_argument("--password", help="password (default: generated and printed)")
    _state_option(add)
    add.set_defaults(func=_cmd_user_add)
    listing = user_commands.add_parser(
        "list", help="list users and groups", description="List the pool's users."
    )
    _state_option(listing)
    listing.set_defaults(func=_cmd_user_list)

    login_parser = commands.add_parser(
        "login",
        help="sign in and print an ID token",
        description=(
            "Sign in with USER_PASSWORD_AUTH on the app client and print the ID token, for "
            'curl -H "Authorization: $ID_TOKEN". The administrator\'s password comes from the '
            "state file; for others use --password-stdin (or type it at the prompt)."
        ),
    )
    login_parser.add_argument("name", help="username")
    secret = login_parser.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (no prompt)",
    )
    secret.add_argument("--password", help="password (visible to other local users: prefer stdin)")
    _state_option(login_parser)
    login_parser.set_defaults(func=_cmd_login)

    ca_cert = commands.add_parser(
        "ca-cert",
        help="print the root CA certificate that devices pin",
        description=(
            "The Private CA's certificate from the offline stack "
            "(GetCertificateAuthorityCertificate): what a factory bakes into a device."
        ),
    )
    ca_cert.add_argument("--out", help="write it to this file instead of printing it")
    _state_option(ca_cert)
    ca_cert.set_defaults(func=_cmd_ca_cert)

    sweep = commands.add_parser(
        "sweep",
        help="run the sweeper now (finishes what requests that died left on device rows)",
        description=(
            "Invoke the sweeper function once through the offline stack's Lambda Invoke API, "
            "as `aws lambda invoke --function-name <SweeperFunctionName>` does in AWS (where it "
            "also runs every 5 minutes), and print what it found and fixed."
        ),
    )
    _state_option(sweep)
    sweep.set_defaults(func=_cmd_sweep)

    expiry = commands.add_parser(
        "expiry",
        help="run the expiry watch now (reports expiring certificates, asks devices to renew)",
        description=(
            "Invoke the expiry watch once through the offline stack's Lambda Invoke API, as "
            "`aws lambda invoke --function-name <ExpiryWatchFunctionName>` does in AWS (where "
            "it also runs on the template's ExpiryWatchSchedule), and print its report."
        ),
    )
    _state_option(expiry)
    expiry.set_defaults(func=_cmd_expiry)

    state = commands.add_parser(
        "state",
        help="print one value of the state file, e.g. api_url or mqtt.port",
        description=(
            "Print one value of the running stack's state file by its dotted key, for scripts: "
            f"API_URL=$({hints.command('state', 'api_url')}). Keys: outputs.<Output>, "
            "endpoint_url, api_url, app_url, region, mqtt.host, mqtt.port, mqtt.ca_file, "
            "stack_name."
        ),
    )
    state.add_argument("key", help="dotted key, e.g. api_url, outputs.UserPoolId, mqtt.port")
    _state_option(state)
    state.set_defaults(func=_cmd_state)

    logs = commands.add_parser(
        "logs",
        help="show or follow the stack's logs (Lambda functions, MQTT broker)",
        description=(
            "Print the logs in the stack's log folder (logs/ beside the state file): "
            "<FunctionLogicalId>.log for each Lambda function, mqtt-broker.log, devstack.log."
        ),
    )
    logs.add_argument(
        "function",
        nargs="?",
        help="one log: a function's logical id (e.g. ProvisioningFunction) or mqtt-broker",
    )
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C"
    )
    logs.add_argument("--dir", help="the log folder (default: logs/ beside the state file)")
    _state_option(logs)
    logs.set_defaults(func=_cmd_logs)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except (DevstackError, params_module.ConfigError) as exc:
        command = " ".join(filter(None, [args.command, getattr(args, "user_command", None)]))
        print(f"devstack {command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result
