"""The running offline stack: moto server + local deployment + local gateway, and its state file.

``start_stack`` is what ``devstack up``, ``demo`` and the end-to-end tests use. It
builds each function's package (devstack.awslambda.packages, like ``sam build``), starts moto, runs
the functions in worker processes (devstack.awslambda.workers: the custom resource during the
deployment, then the API's functions behind the gateway), and stops all of it on ``stop()``.
The MQTT broker runs the template's topic rules (devstack.iot.topic_rules) and takes AWS IoT's own
publishes and disconnects (DeleteConnection) from the iot-data endpoint (devstack.iot.iot_data)
every worker is pointed at.

The phone app (webapp/ beside the template) is served on its own port of 127.0.0.1
(devstack.webapp_server), with ``/config.json`` answered from the running stack; the template is
deployed with ``AppOrigin`` set to that server's origin, so the API's CORS answers that page and
no other, as in AWS.

The gateway applies the template's stage throttling by default, as API Gateway does
(devstack.apigateway.throttle; ``throttle=False`` turns it off for a suite that must burst); AWS API
quotas on the emulated services are applied on request (``quotas=True``,
devstack.moto_bridges.quotas).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from moto.server import ThreadedMotoServer

from devstack import hints
from devstack.apigateway.gateway import GatewayServer, LocalApi
from devstack.apigateway.throttle import StageThrottle, stage_throttle_from_template
from devstack.awslambda.lambda_api import LambdaApiServer
from devstack.awslambda.packages import build_packages
from devstack.awslambda.workers import ProcessInvoker
from devstack.cloudformation.deployer import Deployment, deploy
from devstack.cloudformation.template import function_code_uris
from devstack.errors import DevstackError
from devstack.iot.broker import BrokerThread, MqttEndpoint
from devstack.iot.iot_data import IotDataServer
from devstack.iot.topic_rules import RuleEngine
from devstack.moto_bridges import gaps as moto_gaps
from devstack.moto_bridges import lifetime as cert_lifetimes
from devstack.moto_bridges.quotas import QuotaLimiter, apply_quotas
from devstack.webapp_server import AppServer, app_config

DEFAULT_STATE = Path(".local/stack.json")
DEFAULT_TEMPLATE = Path("template.yaml")
APP_DIR_NAME = "webapp"  # the phone app's folder, beside the template
DEFAULT_ADMIN_EMAIL = "admin@example.com"
# The offline stack never uses real credentials, not even against 127.0.0.1.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
_CLEARED = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


def check_port_free(port: int, option: str, host: str = "127.0.0.1") -> None:
    """Fail with one clear line naming ``option`` when ``port`` is taken (0: any free port)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DevstackError(
                f"port {port} on {host} is in use; pick another with {option}"
            ) from exc


@contextlib.contextmanager
def offline_credentials(region: str) -> Iterator[None]:
    """Fake credentials and the region in os.environ while the stack runs; restored after."""
    saved = {name: os.environ.get(name) for name in (*FAKE_CREDENTIALS, *_CLEARED, "AWS_REGION")}
    saved["AWS_DEFAULT_REGION"] = os.environ.get("AWS_DEFAULT_REGION")
    os.environ.update(FAKE_CREDENTIALS)
    os.environ["AWS_DEFAULT_REGION"] = region
    os.environ["AWS_REGION"] = region
    for name in _CLEARED:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class RunningStack:
    """Everything ``start_stack`` started; ``stop()`` undoes it."""

    moto: ThreadedMotoServer
    endpoint_url: str
    deployment: Deployment
    gateway: GatewayServer
    state_path: Path | None
    invoker: ProcessInvoker
    lambda_api: LambdaApiServer
    _exit: contextlib.ExitStack = field(repr=False)
    mqtt: MqttEndpoint | None = None
    iot_data: IotDataServer | None = None  # AWS IoT's Publish, DeleteConnection: the broker
    rules: RuleEngine | None = None  # the template's topic rules, run by the broker
    throttle: StageThrottle | None = None  # the gateway's stage throttling, if applied
    quotas: QuotaLimiter | None = None  # the AWS API quotas on moto, if applied
    cert_lifetime: timedelta | None = None  # device certificates' lifetime, if shortened
    app: AppServer | None = None  # the phone app's static files and its config.json

    @property
    def app_url(self) -> str:
        """The phone app's page: ``http://127.0.0.1:<port>/``."""
        if self.app is None:
            raise DevstackError("this stack serves no app")
        return self.app.url + "/"

    @property
    def app_config(self) -> dict[str, str]:
        """What the app's ``/config.json`` answers."""
        return app_config(
            api_url=self.api_url,
            region=self.deployment.region,
            user_pool_id=self.deployment.outputs["UserPoolId"],
            client_id=self.deployment.outputs["UserPoolClientId"],
            cognito_endpoint=self.endpoint_url,
        )

    @property
    def api_url(self) -> str:
        return self.gateway.api_url

    @property
    def outputs(self) -> dict[str, str]:
        return {**self.deployment.outputs, "ApiUrl": self.api_url}

    def client(self, service: str, endpoint_url: str | None = None) -> Any:
        """A client of the stack's AWS (moto), or of another of its endpoints."""
        return boto3.client(
            service,
            region_name=self.deployment.region,
            endpoint_url=endpoint_url or self.endpoint_url,
        )

    def state(self) -> dict[str, Any]:
        return {
            "outputs": self.outputs,
            "endpoint_url": self.endpoint_url,
            "api_url": self.api_url,
            "region": self.deployment.region,
            "admin": {
                "username": self.deployment.admin_username,
                "password": self.deployment.admin_password,
            },
            "lambda_url": self.lambda_api.url,
            "pid": os.getpid(),
            "pid_started": process_started(os.getpid()),
            "stack_name": self.deployment.stack_name,
            **({"app_url": self.app_url} if self.app is not None else {}),
            **({"mqtt": self.mqtt.state()} if self.mqtt is not None else {}),
            **({"iot_data_url": self.iot_data.url} if self.iot_data is not None else {}),
            **(
                {"cert_lifetime_seconds": int(self.cert_lifetime.total_seconds())}
                if self.cert_lifetime is not None
                else {}
            ),
        }

    def stop(self) -> None:
        self._exit.close()


def start_stack(
    *,
    template: Path = DEFAULT_TEMPLATE,
    parameters: dict[str, str] | None = None,
    region: str = "us-east-1",
    api_port: int = 0,
    moto_port: int = 0,
    state_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
    gateway_options: dict[str, Any] | None = None,
    build_dir: Path | None = None,
    lambda_log_dir: Path | None = None,
    build_progress: Callable[[str], None] | None = None,
    mqtt_port: int | None = 0,
    throttle: bool = True,
    quotas: bool | QuotaLimiter = False,
    cert_lifetime: timedelta | None = None,
    app_port: int | None = 0,
    app_dir: Path | None = None,
) -> RunningStack:
    """Build the functions, start moto, deploy the template onto it, start the gateway and the
    MQTT broker (unless ``mqtt_port`` is None).

    Packages go to ``build_dir`` (default ``.local/build`` next to the template), each
    function's log to ``<lambda_log_dir>/<LogicalId>.log`` (default ``.local/logs``); the
    state file is written when ``state_path`` is given. ``build_progress`` (default
    ``progress``) hears the package builds, pip's lines included.

    ``throttle`` applies the template's stage throttling at the gateway (on by default, as in
    AWS); ``quotas`` applies AWS's default API quotas to moto (off by default), or the given
    limiter's. ``cert_lifetime`` makes ACM PCA issue device certificates valid for that long
    (devstack.moto_bridges.lifetime; off by default: the template's DeviceCertValidityDays).

    The phone app's files (``app_dir``, default ``webapp/`` beside the template) are served on
    ``app_port`` (0: a free port; None: not served), and ``AppOrigin`` is that server's origin
    unless ``parameters`` sets it.
    """
    check_port_free(api_port, "--port")
    check_port_free(moto_port, "--moto-port")
    if app_port is not None:
        check_port_free(app_port, "--app-port")
    if mqtt_port is not None:
        check_port_free(mqtt_port, "--mqtt-port")
    parameters = {"AdminEmail": DEFAULT_ADMIN_EMAIL, **(parameters or {})}
    say = progress or (lambda _message: None)
    local_dir = Path(template).resolve().parent / ".local"
    packages = build_packages(
        function_code_uris(template),
        build_dir or local_dir / "build",
        progress=build_progress or progress,
    )
    exit_stack = contextlib.ExitStack()
    try:
        app = None
        if app_port is not None:
            app = AppServer(
                app_dir or Path(template).resolve().parent / APP_DIR_NAME, port=app_port
            )
            exit_stack.callback(app.server_close)
            parameters.setdefault("AppOrigin", app.url)
        exit_stack.enter_context(offline_credentials(region))
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request log lines
        moto_gaps.apply()
        if cert_lifetime is not None:
            exit_stack.enter_context(cert_lifetimes.device_lifetime_of(cert_lifetime))
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
        moto.start()
        exit_stack.callback(moto.stop)
        host, port = moto.get_host_and_port()
        endpoint_url = f"http://{host}:{port}"
        say(f"moto server at {endpoint_url}")
        limiter = None
        if quotas is not False:
            limiter = apply_quotas(moto, None if quotas is True else quotas)
        if limiter is not None:
            say(f"AWS API quotas on {len(limiter.quotas)} operations")
        iot_data = IotDataServer().start()
        exit_stack.callback(iot_data.stop)
        say(f"iot-data endpoint at {iot_data.url}")
        invoker = ProcessInvoker(
            packages,
            endpoints=iot_data.environment(),
            region=region,
            endpoint_url=endpoint_url,
            credentials=FAKE_CREDENTIALS,
            log_dir=lambda_log_dir or local_dir / "logs",
            warn=progress or _warn,
        )
        exit_stack.callback(invoker.close)
        say(f"Lambda logs in {invoker.log_dir}")
        deployment = deploy(
            template,
            parameters,
            endpoint_url=endpoint_url,
            region=region,
            progress=progress,
            invoker=invoker,
        )
        stage_throttle = (
            stage_throttle_from_template(
                template,
                parameters,
                region=region,
                api_logical_id=deployment.api.logical_id,
                physical_ids=deployment.physical_ids,
            )
            if throttle
            else None
        )
        if stage_throttle is not None:
            for setting in stage_throttle.settings:
                say(
                    f"stage throttle {setting.http_method} {setting.resource_path}: "
                    f"{setting.rate:g} requests/s, burst {setting.burst:g}"
                )
        options: dict[str, Any] = {"throttle": stage_throttle, **(gateway_options or {})}
        api = LocalApi(
            deployment, endpoint_url=endpoint_url, invoker=invoker.synchronous, **options
        )
        gateway = GatewayServer(api, port=api_port).start()
        exit_stack.callback(gateway.stop)
        say(f"API gateway at {gateway.api_url}")
        lambda_api = LambdaApiServer(deployment.functions, invoker.synchronous).start()
        exit_stack.callback(lambda_api.stop)
        running = RunningStack(
            moto=moto,
            endpoint_url=endpoint_url,
            deployment=deployment,
            gateway=gateway,
            state_path=state_path,
            invoker=invoker,
            lambda_api=lambda_api,
            _exit=exit_stack,
            throttle=stage_throttle,
            quotas=limiter,
            iot_data=iot_data,
            cert_lifetime=cert_lifetime,
            app=app,
        )
        if app is not None:
            app.configure(running.app_config)
            app.start()
            exit_stack.callback(app.stop)
            say(f"phone app at {running.app_url}")
        if mqtt_port is not None:
            running.rules = RuleEngine(
                rules=deployment.topic_rules,
                permissions=deployment.permissions,
                functions=deployment.functions,
                invoker=invoker,
                account_id=deployment.account_id,
            )
            exit_stack.callback(running.rules.close)
            running.mqtt = _start_broker(exit_stack, running, state_path, mqtt_port)
            say(f"MQTT broker at {running.mqtt.host}:{running.mqtt.port}")
        if state_path is not None:
            write_state(state_path, running.state())
            exit_stack.callback(remove_state, state_path)
        return running
    except BaseException:
        exit_stack.close()
        raise


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _start_broker(
    exit_stack: contextlib.ExitStack, stack: RunningStack, state_path: Path | None, port: int
) -> MqttEndpoint:
    """The broker standing in for IoT Core; its files beside the state file (or in a temporary
    directory without one), its decisions in ``logs/mqtt-broker.log`` there."""
    if state_path is not None:
        home = state_path.parent
    else:
        home = Path(tempfile.mkdtemp(prefix="devstack-"))
        exit_stack.callback(shutil.rmtree, home, True)
    broker = BrokerThread(
        directory=home / "mqtt",
        log_file=home / "logs" / "mqtt-broker.log",
        endpoint_url=stack.endpoint_url,
        region=stack.deployment.region,
        ca_arn=stack.deployment.outputs["IssuingCertificateAuthorityArn"],
        port=port,
        rules=stack.rules,
    )
    endpoint = broker.start()
    exit_stack.callback(broker.stop)
    if stack.iot_data is not None:
        stack.iot_data.publish = broker.publish
        stack.iot_data.disconnect = broker.disconnect
        exit_stack.callback(setattr, stack.iot_data, "publish", None)
        exit_stack.callback(setattr, stack.iot_data, "disconnect", None)
    return endpoint


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write the state file atomically, readable by its owner only (it holds a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=2)
        handle.write("\n")
    temporary.replace(path)


def remove_state(path: Path) -> None:
    path.unlink(missing_ok=True)


def read_state(path: Path) -> dict[str, Any]:
    """The state of a running ``up``; a clear error when there is none."""
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DevstackError(
            f"the offline stack is not up (no {path}); start it with "
            f"`{hints.command('up', state=path)}`"
        ) from None
    except (OSError, ValueError) as exc:
        raise DevstackError(f"cannot read the state file {path}: {exc}") from exc
    for key in ("outputs", "endpoint_url", "region"):
        if key not in state:
            raise DevstackError(
                f"the state file {path} has no {key!r}; remove it and run "
                f"`{hints.command('up', state=path)}`"
            )
    return state


def process_started(pid: int) -> str | None:
    """When the process started (its start time in clock ticks since boot, from /proc), or None
    where /proc has no answer: with the pid, it tells a stack's process from a later one that
    reuses its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: count the fields after its ")".
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def stack_process_alive(state: dict[str, Any]) -> bool:
    """Whether the process a state file names still runs: its pid is alive and, where the file
    recorded when it started, it is the same process, not a later one given the same pid."""
    pid = int(state.get("pid") or 0)
    if not pid or not pid_alive(pid):
        return False
    recorded = state.get("pid_started")
    return recorded is None or process_started(pid) in (None, recorded)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StackClient:
    """Talks to a running stack described by a state file (for the CLI's user/login)."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self.state = read_state(state_path)
        self.region: str = self.state["region"]
        self.endpoint_url: str = self.state["endpoint_url"]
        self.outputs: dict[str, str] = self.state["outputs"]
        self._config = Config(
            connect_timeout=2, read_timeout=10, retries={"max_attempts": 1, "mode": "standard"}
        )
        self._credentials = dict(FAKE_CREDENTIALS)

    def client(self, service: str, endpoint_url: str | None = None, **config: Any) -> Any:
        """A client of the offline stack (``endpoint_url``: another of its endpoints)."""
        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=endpoint_url or self.endpoint_url,
            aws_access_key_id=self._credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self._credentials["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=self._credentials["AWS_SESSION_TOKEN"],
            config=self._config.merge(Config(**config)) if config else self._config,
        )

    def check_up(self) -> None:
        """Fail with one line when the server named in the state file does not answer."""
        try:
            self.client("cognito-idp").describe_user_pool(UserPoolId=self.outputs["UserPoolId"])
        except ClientError as exc:
            raise DevstackError(
                f"the stack in {self.state_path} is gone ({exc.response['Error']['Code']}); "
                f"start it again with `{hints.command('up', state=self.state_path)}`"
            ) from exc
        except BotoCoreError as exc:
            raise DevstackError(
                f"the offline stack is not up: nothing answers at {self.endpoint_url} "
                f"(stale {self.state_path}?); start it with "
                f"`{hints.command('up', state=self.state_path)}`"
            ) from exc


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
