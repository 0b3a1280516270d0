"""The offline Lambda runtime: each function from its own package, in worker processes.

The template's own functions are built and imported as Lambda would import them; fixture
functions (tests/fixtures/runtime) misbehave on purpose behind a gateway of their own, deployed
on the session's moto server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.apigateway.gateway import GatewayServer, LocalApi
from devstack.awslambda.packages import build_package, build_packages, runtime_folder
from devstack.awslambda.workers import ProcessInvoker
from devstack.cloudformation.deployer import deploy
from devstack.cloudformation.template import function_code_uris
from devstack.stack import FAKE_CREDENTIALS, RunningStack
from tests.e2e.conftest import ROOT, TEMPLATE

pytestmark = pytest.mark.e2e

FIXTURES = ROOT / "tests" / "fixtures" / "runtime"
HANDLER_MODULES = {
    "ProvisioningFunction": "provisioning.handlers.api",
    "DeploymentFunction": "ca_registration.handler",
}


@dataclass
class FixtureApi:
    invoker: ProcessInvoker
    gateway: GatewayServer
    log_dir: Path

    def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1
            f"{self.gateway.api_url}{path}",
            data=json.dumps(body or {}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def log(self, logical_id: str) -> str:
        return (self.log_dir / f"{logical_id}.log").read_text()


@pytest.fixture(scope="module")
def fixture_api(
    offline_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FixtureApi]:
    """The fixture template deployed on the session's moto, its functions in worker processes."""
    work = tmp_path_factory.mktemp("runtime")
    template = FIXTURES / "template.yaml"
    packages = build_packages(function_code_uris(template), work / "build")
    invoker = ProcessInvoker(
        packages,
        region=offline_stack.deployment.region,
        endpoint_url=offline_stack.endpoint_url,
        credentials=FAKE_CREDENTIALS,
        log_dir=work / "logs",
    )
    try:
        deployment = deploy(
            template,
            {},
            endpoint_url=offline_stack.endpoint_url,
            region=offline_stack.deployment.region,
            stack_name="runtime-test",
            invoker=invoker,
        )
        api = LocalApi(
            deployment, endpoint_url=offline_stack.endpoint_url, invoker=invoker.synchronous
        )
        gateway = GatewayServer(api).start()
        try:
            yield FixtureApi(invoker, gateway, work / "logs")
        finally:
            gateway.stop()
    finally:
        invoker.close()


def _clean_import(package_root: Path, runtime: Path, module: str, env: dict[str, str]) -> str:
    """Import ``module`` in an interpreter whose path is the package, the runtime, the stdlib."""
    script = (
        "import importlib, importlib.util, sys\n"
        f"sys.path[:0] = [{str(package_root)!r}, {str(runtime)!r}]\n"
        f"importlib.import_module({module!r})\n"
        "print(importlib.util.find_spec('jsonschema') is None)\n"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed script
        [sys.executable, "-I", "-S", "-c", script],
        env=env,
        cwd=package_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("logical_id", sorted(HANDLER_MODULES))
def test_each_function_imports_from_its_own_package_alone(
    offline_stack: RunningStack, logical_id: str
) -> None:
    # GIVEN the function's package as `sam build` makes it (already built for this session)
    code_uri = function_code_uris(TEMPLATE)[logical_id]
    before = build_package(logical_id, code_uri, ROOT / ".local" / "build")
    inode = before.root.stat().st_ino

    # WHEN it is built again with its requirements unchanged
    package = build_package(logical_id, code_uri, ROOT / ".local" / "build")

    # THEN nothing was reinstalled, and its handler imports in a clean interpreter that sees
    # only the package and the runtime's boto3 (the dev virtualenv's jsonschema is not there)
    assert package.root.stat().st_ino == inode
    function = offline_stack.deployment.functions[logical_id]
    env = offline_stack.invoker.environment(function, package)
    assert _clean_import(package.root, package.runtime, HANDLER_MODULES[logical_id], env) == "True"


def test_a_package_is_rebuilt_when_its_requirements_change(tmp_path: Path) -> None:
    # GIVEN a built function
    code = tmp_path / "code"
    shutil.copytree(FIXTURES / "probe", code)
    first = build_package("Probe", code, tmp_path / "build")
    inode = first.root.stat().st_ino

    # WHEN its code changes, it is copied again without a rebuild
    (code / "probe" / "extra.py").write_text("VALUE = 1\n")
    assert build_package("Probe", code, tmp_path / "build").root.stat().st_ino == inode
    assert (first.root / "probe" / "extra.py").read_text() == "VALUE = 1\n"
    # and a file removed from the code leaves the package
    (code / "probe" / "extra.py").unlink()
    build_package("Probe", code, tmp_path / "build")
    assert not (first.root / "probe" / "extra.py").exists()

    # WHEN its requirements change, THEN the package is built afresh
    (code / "requirements.txt").write_text("# changed\n")
    assert build_package("Probe", code, tmp_path / "build").root.stat().st_ino != inode


def test_the_runtime_links_stay_put_for_a_stack_started_through_a_linked_checkout(
    tmp_path: Path,
) -> None:
    # GIVEN the runtime's links, made by a stack started from this checkout
    build = tmp_path / "build"
    runtime = runtime_folder(build)
    boto3 = runtime / "boto3"
    made = os.readlink(boto3)
    # ... and one pointing at the same folder another way, as from a directory whose .venv is
    # a link to this one (a function may be importing through it right now)
    alias = tmp_path / "venv-alias"
    alias.symlink_to(Path(made).parent)
    boto3.unlink()
    boto3.symlink_to(alias / "boto3")
    # WHEN another stack builds the runtime folder again
    runtime_folder(build)
    # THEN that link is left as it is: the same folder, nothing replaced under a running import
    assert os.readlink(boto3) == str(alias / "boto3")
    # ... while a link to anything else is put right
    boto3.unlink()
    boto3.symlink_to(tmp_path)
    runtime_folder(build)
    assert os.readlink(boto3) == made
    assert sorted(p.name for p in runtime.iterdir() if p.name.startswith(".")) == []


def test_a_worker_sees_only_its_package_the_runtime_and_its_environment(
    fixture_api: FixtureApi, offline_stack: RunningStack
) -> None:
    status, answer = fixture_api.post("/probe")

    assert status == 200, answer
    assert answer["imports"] == {
        "boto3": True,
        "botocore": True,
        "jsonschema": False,
        "pytest": False,
        "devstack": False,
        "moto": False,
    }
    assert answer["pid"] != os.getpid()
    assert answer["environment"]["AWS_ENDPOINT_URL"] == offline_stack.endpoint_url
    assert answer["environment"]["PYTHONPATH"] is None
    assert answer["environment"]["AWS_LAMBDA_FUNCTION_NAME"]
    assert 0 < answer["remainingMs"] <= 20_000
    # what the handler printed is in the function's log, not on the terminal
    assert f"probe invocation {answer['invocations']} in process {answer['pid']}" in (
        fixture_api.log("ProbeFunction")
    )


def test_a_warm_worker_is_reused_with_its_module_state(fixture_api: FixtureApi) -> None:
    _, first = fixture_api.post("/probe")
    _, second = fixture_api.post("/probe")

    assert second["pid"] == first["pid"]
    assert second["invocations"] == first["invocations"] + 1


def test_two_slow_invocations_run_at_the_same_time(fixture_api: FixtureApi, tmp_path: Path) -> None:
    # GIVEN two invocations that each record their start, then wait until both have started
    events = tmp_path / "events"
    events.touch()
    answers: dict[str, tuple[int, Any]] = {}

    def call(tag: str) -> None:
        answers[tag] = fixture_api.post("/probe", {"events": str(events), "tag": tag, "peers": 2})

    threads = [threading.Thread(target=call, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # THEN both started before either ended: they ran in two environments at once
    assert [answers[tag][0] for tag in ("a", "b")] == [200, 200], answers
    assert all(answers[tag][1]["sawPeers"] for tag in ("a", "b"))
    lines = events.read_text().split()
    recorded = [" ".join(pair) for pair in zip(lines[::2], lines[1::2], strict=True)]
    assert [line.split()[0] for line in recorded] == ["start", "start", "end", "end"]
    assert answers["a"][1]["pid"] != answers["b"][1]["pid"]


def test_past_its_reserved_concurrency_a_request_is_throttled_and_an_event_waits(
    fixture_api: FixtureApi, tmp_path: Path
) -> None:
    # GIVEN both of ProbeFunction's reserved environments busy (two invocations that have
    # started, seen each other, and sleep for two seconds)
    events = tmp_path / "events"
    events.touch()
    answers: dict[str, tuple[int, Any]] = {}

    def call(tag: str) -> None:
        body = {"events": str(events), "tag": tag, "peers": 2, "sleep": 2}
        answers[tag] = fixture_api.post("/probe", body)

    threads = [threading.Thread(target=call, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while events.read_text().count("end ") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert events.read_text().count("end ") == 2
    # WHEN a third request arrives through the gateway, and an event through the async path
    third = fixture_api.post("/probe")
    function = fixture_api.gateway.api.deployment.functions["ProbeFunction"]
    event_answer = fixture_api.invoker(function, {"body": "{}"})
    for thread in threads:
        thread.join(timeout=60)
    # THEN Lambda throttles the request, which API Gateway answers 500 (INTEGRATION_FAILURE),
    # while the event waited for one of the two environments to be free and ran in it; both
    # busy invocations succeeded
    assert third == (500, {"message": "Internal server error"}), third
    assert [answers[tag][0] for tag in ("a", "b")] == [200, 200], answers
    assert event_answer["statusCode"] == 200
    pid = json.loads(event_answer["body"])["pid"]
    assert pid in (answers["a"][1]["pid"], answers["b"][1]["pid"])
    # ... and once an environment is free, the next request runs
    assert fixture_api.post("/probe")[0] == 200


def test_an_invocation_past_its_timeout_is_killed_and_the_next_gets_a_fresh_worker(
    fixture_api: FixtureApi,
) -> None:
    # GIVEN a warm worker of a function with a one-second Timeout
    status, warm = fixture_api.post("/short")
    assert status == 200, warm

    # WHEN an invocation runs past the Timeout
    status, answer = fixture_api.post("/short", {"sleep": 30})

    # THEN the gateway answers as for a failed integration, the worker is gone, and the next
    # invocation runs in a new environment (its module state starts again)
    assert status == 502, answer
    assert "Task timed out after 1.00 seconds" in fixture_api.log("ShortFunction")
    status, fresh = fixture_api.post("/short")
    assert status == 200, fresh
    assert fresh["pid"] != warm["pid"]
    assert fresh["invocations"] == 1
    with pytest.raises(ProcessLookupError):
        os.kill(warm["pid"], 0)


def test_a_requirement_missing_from_the_package_is_a_502_with_lambdas_import_error(
    fixture_api: FixtureApi,
) -> None:
    # The handler imports jsonschema; the dev virtualenv has it, the function's package does not.
    status, _ = fixture_api.post("/missing")

    assert status == 502
    log = fixture_api.log("MissingRequirementFunction")
    assert (
        "Runtime.ImportModuleError: Unable to import module 'needs_jsonschema.handler': "
        "No module named 'jsonschema'"
    ) in log


def test_an_invocation_past_the_integration_limit_is_504(fixture_api: FixtureApi) -> None:
    # GIVEN a gateway that waits one second for its integration, as API Gateway waits 29
    deployment = fixture_api.gateway.api.deployment
    api = LocalApi(
        deployment,
        endpoint_url=deployment.endpoint_url,
        invoker=fixture_api.invoker.synchronous,
        integration_timeout=1.0,
    )
    server = GatewayServer(api).start()
    try:
        slow = FixtureApi(fixture_api.invoker, server, fixture_api.log_dir)

        # WHEN the function takes longer than that (well inside its own Timeout)
        status, answer = slow.post("/probe", {"sleep": 3})
    finally:
        server.stop()

    # THEN the gateway answers 504 with API Gateway's default body: this template defines no
    # GatewayResponses
    assert (status, answer) == (504, {"message": "Endpoint request timed out"})
