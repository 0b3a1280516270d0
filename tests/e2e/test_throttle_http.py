"""The gateway's stage throttling: what API Gateway does with a burst above the template's limits.

The session's stack must carry the template's throttle; the pipeline is then driven with a
small bucket and a fake clock, so the tests see exactly which requests reach the authorizer
and the Lambda (a recording stand-in) and which are answered 429 by the gateway itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from devstack.apigateway.gateway import GatewayResponse, LocalApi
from devstack.apigateway.throttle import MethodThrottle, StageThrottle
from devstack.awslambda.runtime import FunctionSpec
from devstack.cloudformation.template import load_yaml
from devstack.stack import RunningStack
from tests.support.offline import TEMPLATE, device_key, gateway_error, new_member, unique_dsn

pytestmark = pytest.mark.e2e


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    events: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, function: FunctionSpec, event: dict[str, Any]) -> Any:
        self.events.append(event)
        return {"statusCode": 200, "body": json.dumps({"ok": True})}


def test_the_offline_stack_throttles_as_the_template_says(offline_stack: RunningStack) -> None:
    parameters = load_yaml(TEMPLATE)["Parameters"]
    assert offline_stack.throttle is not None
    assert offline_stack.throttle.settings == [
        MethodThrottle(
            "/*",
            "*",
            rate=float(parameters["ApiThrottleRateLimit"]["Default"]),
            burst=float(parameters["ApiThrottleBurstLimit"]["Default"]),
        )
    ]
    assert offline_stack.gateway.api.throttle is offline_stack.throttle


def test_a_burst_past_the_bucket_is_answered_429_before_the_authorizer_and_the_lambda(
    offline_stack: RunningStack,
) -> None:
    # GIVEN a gateway whose stage allows 1 request a second with a burst of 3
    clock = FakeClock()
    recorder = Recorder()
    api = LocalApi(
        offline_stack.deployment,
        endpoint_url=offline_stack.endpoint_url,
        invoker=recorder,
        throttle=StageThrottle([MethodThrottle("/*", "*", rate=1, burst=3)], clock=clock),
    )
    token = new_member(offline_stack).id_token
    stage = api.api.stage

    def post(with_token: bool = True) -> GatewayResponse:
        body = json.dumps({"DSN": unique_dsn(), "publicKey": device_key()[1]}).encode()
        headers = [("Content-Type", "application/json")]
        if with_token:
            headers.append(("Authorization", token))
        return api.handle("POST", f"/{stage}/certificate", headers, body)

    # WHEN five requests come at the same instant
    answers = [post() for _ in range(5)]
    # THEN three reach the Lambda and two are throttled by the gateway, in the template's shape,
    # with the template's Retry-After
    assert [answer.status for answer in answers] == [200, 200, 200, 429, 429]
    assert len(recorder.events) == 3
    for throttled in answers[3:]:
        assert json.loads(throttled.body) == gateway_error("THROTTLED")
        assert throttled.headers["Retry-After"] == "1"
    # AND a request without a token is throttled too: the throttle comes before the authorizer
    assert post(with_token=False).status == 429
    # AND another method has its own bucket
    dsn = unique_dsn()
    read = api.handle("GET", f"/{stage}/devices/{dsn}", [("Authorization", token)], b"")
    assert read.status == 200
    # AND a second later one more request gets through
    clock.now += 1.0
    assert [post().status, post().status] == [200, 429]
    assert len(recorder.events) == 5
