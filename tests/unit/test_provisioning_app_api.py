"""The app's API call: a 429 is retried after Retry-After, within bounds; nothing else is."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import provisioning_app as app
import pytest

from onboarding_ble import events

Answer = tuple[int, dict[str, str], dict[str, object]]  # status, headers, JSON body

RATE_LIMITED: Answer = (
    429,
    {"Retry-After": "1"},
    {"msg": "Too Many Requests", "code": "TOO_MANY_REQUESTS"},
)
ISSUED: Answer = (200, {}, {"thingName": "device_SN-1", "certificatePem": "PEM"})


class FakeApi:
    """POST /certificate on 127.0.0.1 (a free port), answering from a script."""

    def __init__(self, answers: list[Answer], then: Answer) -> None:
        self.answers = list(answers)
        self.then = then
        self.requests: list[dict[str, object]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                api.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization")}
                    | json.loads(self.rfile.read(length))
                )
                status, headers, body = api.answers.pop(0) if api.answers else api.then
                raw = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeApi]]:
    started: list[FakeApi] = []

    def start(answers: list[Answer], then: Answer = ISSUED) -> FakeApi:
        api = FakeApi(answers, then)
        started.append(api)
        return api

    try:
        yield start
    finally:
        for api in started:
            api.close()


def call(
    api: FakeApi,
    max_wait: float = app.RATE_LIMIT_MAX_WAIT,
    budget: float = app.RATE_LIMIT_BUDGET,
) -> tuple[app.ApiResult, list[float]]:
    """One API call as the app makes it, with a sleep that records instead of waiting."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    result = asyncio.run(
        app.request_certificate_with_retries(
            api.url, "id-token", "SN-1", b"k" * 32, max_wait=max_wait, budget=budget, sleep=sleep
        )
    )
    return result, slept


def test_429_twice_then_200_waits_as_told_and_succeeds(serve, capsys) -> None:
    # GIVEN an API that is rate limiting for two calls, Retry-After: 1
    api = serve([RATE_LIMITED, RATE_LIMITED])

    # WHEN the app asks for a certificate
    result, slept = call(api)

    # THEN it waited 1 s twice, the third call got the certificate, and it said so
    assert result.ok and result.body["thingName"] == "device_SN-1"
    assert result.attempts == 3
    assert slept == [1.0, 1.0]
    assert len(api.requests) == 3
    assert all(r["DSN"] == "SN-1" and r["path"] == "/v1/certificate" for r in api.requests)
    said = events.parse_all(capsys.readouterr().out.splitlines())
    assert said == [
        events.RateLimited(retry_after="1", wait=1.0, retry=1, retries=3),
        events.RateLimited(retry_after="1", wait=1.0, retry=2, retries=3),
    ]


def test_always_429_gives_up_after_three_retries_with_a_clear_error(serve, capsys) -> None:
    # GIVEN an API that answers 429 to every call
    api = serve([], then=RATE_LIMITED)

    # WHEN the app asks for a certificate
    result, slept = call(api)

    # THEN it tries 4 times in all, waits 3 times, and reports the 429 as still rate limited
    assert result.status == 429 and result.attempts == 4
    assert slept == [1.0, 1.0, 1.0]
    assert len(api.requests) == 4
    said = events.parse_all(capsys.readouterr().out.splitlines())
    assert said[-1] == events.RateLimitGaveUp(attempts=4)
    assert [type(e) for e in said] == [events.RateLimited] * 3 + [events.RateLimitGaveUp]
    error = app.refusal(result)
    assert error.exit_code == app.EXIT_API
    assert str(error) == (
        "API refused (429 TOO_MANY_REQUESTS): Too Many Requests; "
        "still rate limited after 4 attempts, try again later"
    )


def test_a_long_retry_after_is_capped_and_the_total_wait_bounded(serve) -> None:
    # GIVEN an API that asks the app to come back in an hour, every time
    api = serve([], then=(429, {"Retry-After": "3600"}, {"msg": "slow down"}))

    # WHEN the app may wait at most 30 s at a time and 60 s in all
    result, slept = call(api, max_wait=30.0, budget=60.0)

    # THEN it waits 30 s twice, then gives up rather than exceed the budget
    assert slept == [30.0, 30.0]
    assert result.status == 429 and result.attempts == 3 == len(api.requests)


@pytest.mark.parametrize("status", [400, 401, 403, 409, 500, 502])
def test_other_errors_are_not_retried(serve, status) -> None:
    # GIVEN an API refusing with another status (even with a Retry-After header)
    api = serve([], then=(status, {"Retry-After": "1"}, {"msg": "no", "code": "NOPE"}))

    # WHEN the app asks once, THEN it gets that answer straight away
    result, slept = call(api)
    assert (result.status, result.body["code"], result.attempts) == (status, "NOPE", 1)
    assert slept == [] and len(api.requests) == 1
    assert str(app.refusal(result)) == f"API refused ({status} NOPE): no"


NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        (None, app.RATE_LIMIT_DEFAULT_WAIT),
        ("", app.RATE_LIMIT_DEFAULT_WAIT),
        ("soon", app.RATE_LIMIT_DEFAULT_WAIT),
        ("-5", app.RATE_LIMIT_DEFAULT_WAIT),
        ("\u00b2", app.RATE_LIMIT_DEFAULT_WAIT),  # a superscript two is a digit to isdigit()
        ("Thu, 01 Jan 2026 12:00:05 GMT", 5.0),
        ("Thu, 01 Jan 2026 11:00:00 GMT", 0.0),  # already past
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date(header, seconds) -> None:
    assert app.retry_after_seconds(header, now=NOW) == seconds
