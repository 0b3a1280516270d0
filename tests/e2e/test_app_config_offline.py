"""`make app-config`: the phone app's config.json from a stack's Outputs, here the offline
stack's (STACK_ARGS="--state ..."), as after `make deploy` from the CloudFormation stack's."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from devstack.stack import RunningStack
from tests.e2e.conftest import ROOT
from tests.support.cors import request
from tools import app_config
from tools.deployed import Stack

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_app_config_writes_what_the_app_needs(
    offline_stack: RunningStack, tmp_path: Path
) -> None:
    out = tmp_path / "webapp" / "config.json"
    out.parent.mkdir()  # as webapp/ is, in a checkout
    # WHEN the README's command runs against the offline stack
    done = subprocess.run(  # noqa: S603 - make from PATH, as the README says
        [  # noqa: S607
            "make",
            "--no-print-directory",
            "-o",
            ".venv/bin/.installed",
            "app-config",
            f"APP_CONFIG_OUT={out}",
            f"STACK_ARGS=--state {offline_stack.state_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # THEN the file names the stack's API, region, pool and client, and its Cognito emulator
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == {
        "apiUrl": offline_stack.api_url,
        "region": offline_stack.deployment.region,
        "userPoolId": offline_stack.outputs["UserPoolId"],
        "clientId": offline_stack.outputs["UserPoolClientId"],
        "cognitoEndpoint": offline_stack.endpoint_url,
    }
    # ... the same the offline stack's own app server answers
    _status, _headers, served = request(offline_stack.app_url + "config.json")
    assert json.loads(served) == written
    assert "(API " in done.stdout and str(out) in done.stdout
    # ... and it says which headers the host must send: the app server's own
    _status, headers, _body = request(offline_stack.app_url + "config.json")
    csp = headers["content-security-policy"]
    assert f"  Content-Security-Policy: {csp}\n" in done.stdout
    assert "  *.webmanifest: application/manifest+json\n" in done.stdout


def test_a_missing_stack_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "config.json"
    assert app_config.main(["--state", str(tmp_path / "none.json"), "--out", str(out)]) == 2
    assert not out.exists()
    assert "app-config:" in capsys.readouterr().err


def test_a_stack_in_aws_gets_aws_cognito() -> None:
    stack = Stack(
        name="iot-device-onboarding",
        region="eu-west-1",
        outputs={
            "ApiUrl": "https://abc.execute-api.eu-west-1.amazonaws.com/prod/",
            "UserPoolId": "eu-west-1_x",
            "UserPoolClientId": "client",
            "Region": "eu-west-1",
        },
    )
    assert app_config.document(stack) == {
        "apiUrl": "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
        "region": "eu-west-1",
        "userPoolId": "eu-west-1_x",
        "clientId": "client",
    }


def test_app_config_says_when_it_cannot_write(offline_stack: RunningStack, tmp_path: Path) -> None:
    state = ["--state", str(offline_stack.state_path)]
    # a folder that does not exist is not made: it is named, and nothing is written
    missing = tmp_path / "no" / "such" / "config.json"
    assert app_config.main(["--out", str(missing), *state]) == 2
    assert not missing.parent.exists()
    # a folder in place of the file: one line, no traceback
    assert app_config.main(["--out", str(tmp_path), *state]) == 2
