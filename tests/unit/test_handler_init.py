"""The API function builds its AWS clients during INIT, but a setting that breaks them never
breaks INIT (which API Gateway would answer with a bare 502): it fails at the first request,
which answers it as the API answers every error. And a number setting is ASCII digits. And a
request that counts nothing leaves no warning in the function's log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning.config import ConfigError, Settings
from tests.unit.test_any_body import PROVISIONING_ENV

ROOT = Path(__file__).resolve().parents[2]
FIRST_REQUEST = """
import json
from provisioning.handlers import api as handler
from tests.support.lambda_support import FakeLambdaContext, api_event
event = api_event(json.dumps({"DSN": "SN-1", "publicKey": "x"}), "sub-alice", "Members")
answer = handler.lambda_handler(event, FakeLambdaContext())
print(json.dumps({"status": answer["statusCode"], "body": json.loads(answer["body"])}))
"""


@pytest.mark.parametrize(
    "broken",
    # (a bad AWS_MAX_ATTEMPTS or AWS_RETRY_MODE fails Powertools' own import, before ours)
    [{"DEVICE_CERT_VALIDITY_DAYS": "\u00b2"}, {"AWS_DEFAULT_REGION": ""}, {"THING_GROUP": ""}],
)
def test_a_broken_setting_fails_the_first_request_not_init(broken: dict[str, str]) -> None:
    done = _run(FIRST_REQUEST, broken)
    # THEN the import (INIT) succeeded, and the request got the API's own 500 with a code
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["status"] == 500 and answer["body"]["code"], answer


REFUSED_REQUEST = """
import json, warnings
from provisioning.handlers import api as handler
from tests.support.lambda_support import FakeLambdaContext, api_event
event = api_event(json.dumps({"DSN": "not a DSN", "publicKey": "x"}), "sub-alice", "Members")
answer = handler.lambda_handler(event, FakeLambdaContext())
warnings.warn("a warning of another kind", UserWarning)
print(json.dumps({"status": answer["statusCode"], "body": json.loads(answer["body"])}))
"""


def test_a_request_with_no_metric_leaves_no_warning_in_the_log() -> None:
    # WHEN a request is refused before anything is counted (so no metric is published)
    done = _run(REFUSED_REQUEST, {})
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["status"] == 400, answer
    # THEN the function's log has no Powertools warning about it, and other warnings still show
    assert "No application metrics" not in done.stderr
    assert "a warning of another kind" in done.stderr


def _run(script: str, broken: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "provisioning_lambda"), str(ROOT)]),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "iot-device-onboarding",
        "POWERTOOLS_METRICS_NAMESPACE": "IoTDeviceOnboarding",
        **PROVISIONING_ENV,
        **broken,
    }
    env = {name: value for name, value in env.items() if value}
    return subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "12 ", "-1", "1e3", ""])
def test_number_settings_must_be_ascii_digits(value: str) -> None:
    env = {**PROVISIONING_ENV, "DEVICE_CERT_VALIDITY_DAYS": value}
    if value == "12 ":
        assert Settings.from_env(env).cert_validity_days == 12  # surrounding blanks are trimmed
        return
    with pytest.raises(ConfigError):
        Settings.from_env(env)
