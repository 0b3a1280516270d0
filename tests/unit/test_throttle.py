"""The gateway's stage throttling: token buckets per method, read from the template."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.apigateway.throttle import (
    MethodThrottle,
    StageThrottle,
    TokenBucket,
    method_throttles,
    stage_throttle_from_template,
)

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def takes(bucket: TokenBucket, attempts: int) -> int:
    return sum(bucket.try_take() for _ in range(attempts))


def test_a_bucket_starts_full_and_refuses_past_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=20, clock=clock)
    assert takes(bucket, 25) == 20
    assert not bucket.try_take()


def test_a_bucket_refills_at_its_rate_and_never_past_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=20, clock=clock)
    takes(bucket, 20)
    clock.now += 0.35  # 3.5 tokens
    assert takes(bucket, 10) == 3
    clock.now += 3600
    assert takes(bucket, 100) == 20


def test_a_clock_going_backwards_adds_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=1, clock=clock)
    assert bucket.try_take()
    clock.now -= 5
    assert not bucket.try_take()


def test_each_method_has_its_own_bucket_from_the_stage_default() -> None:
    clock = FakeClock()
    throttle = StageThrottle([MethodThrottle("/*", "*", rate=1, burst=2)], clock=clock)
    assert [throttle.admit("/certificate", "POST") for _ in range(3)] == [True, True, False]
    # GET /devices/{dsn} is another method: its bucket is still full.
    assert throttle.admit("/devices/{dsn}", "GET")
    clock.now += 1
    assert throttle.admit("/certificate", "POST")
    assert not throttle.admit("/certificate", "POST")


def test_a_method_setting_wins_over_the_stage_default() -> None:
    throttle = StageThrottle(
        [
            MethodThrottle("/*", "*", rate=10, burst=20),
            MethodThrottle("/certificate", "POST", rate=1, burst=1),
        ],
        clock=FakeClock(),
    )
    assert throttle.setting_for("/certificate", "post") == MethodThrottle(
        "/certificate", "POST", 1, 1
    )
    assert throttle.setting_for("/devices/{dsn}", "GET") == MethodThrottle("/*", "*", 10, 20)


def test_a_stage_without_settings_admits_everything() -> None:
    throttle = StageThrottle([], clock=FakeClock())
    assert all(throttle.admit("/certificate", "POST") for _ in range(1000))


def test_method_settings_decode_paths_and_skip_entries_without_throttling() -> None:
    settings = method_throttles(
        [
            {"ResourcePath": "/~1certificate", "HttpMethod": "post", "ThrottlingRateLimit": 5},
            {"ResourcePath": "/*", "HttpMethod": "*", "MetricsEnabled": True},
        ]
    )
    # A missing burst falls back to API Gateway's account default.
    assert settings == [MethodThrottle("/certificate", "POST", 5.0, 5000.0)]


@pytest.mark.parametrize(
    ("overrides", "rate", "burst"),
    [({}, 10.0, 20.0), ({"ApiThrottleRateLimit": "3", "ApiThrottleBurstLimit": "7"}, 3.0, 7.0)],
)
def test_the_stage_throttle_is_the_templates_resolved_method_settings(
    overrides: dict[str, str], rate: float, burst: float
) -> None:
    throttle = stage_throttle_from_template(
        TEMPLATE,
        {"AdminEmail": "admin@example.com", **overrides},
        region="us-east-1",
        api_logical_id="ProvisioningApi",
        physical_ids={},
    )
    assert throttle is not None
    assert throttle.settings == [MethodThrottle("/*", "*", rate, burst)]


def test_another_api_of_the_template_gets_no_throttle() -> None:
    throttle = stage_throttle_from_template(
        TEMPLATE,
        {"AdminEmail": "admin@example.com"},
        region="us-east-1",
        api_logical_id="NoSuchApi",
        physical_ids={},
    )
    assert throttle is None
