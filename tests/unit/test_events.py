"""The example processes' event lines (onboarding_ble.events): what a reader gets back."""

import io

import pytest

from onboarding_ble import events


@pytest.mark.parametrize(
    "event",
    [
        events.Advertising("SN-0001", "F0:F1:F2:F3:F4:F5/P"),
        events.Provisioned("device_SN-0001", "ab" * 32),
        events.Provisioned("device_SN-0001"),
        events.ApiRefused(409, "DEVICE_OWNED", "The device belongs to someone else."),
        events.RateLimited("-", 1.5, 1, 3),
        events.RadioReady(("tcp-client:127.0.0.1:1", "tcp-client:127.0.0.1:2")),
        events.StatusChanged("ERR_APP", "409 DEVICE_OWNED"),
        events.StatusChanged("IDLE"),
    ],
)
def test_an_emitted_line_reads_back_as_the_same_event(event: events.Event) -> None:
    out = io.StringIO()
    events.emit(event, out)
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    assert events.parse(line) == event


def test_log_lines_around_events_are_skipped() -> None:
    output = [
        "2026-01-01 00:00:00 device INFO status RECEIVING",
        "HELLO_PUBLISHED topic=things/device_SN-0001/hello",
        "Traceback (most recent call last):",
    ]
    assert events.parse_all(output) == [events.HelloPublished("things/device_SN-0001/hello")]


def test_a_line_that_names_an_event_but_does_not_fit_it_is_an_error() -> None:
    with pytest.raises(ValueError, match="DEVICE"):
        events.parse("DEVICE dsn=SN-1 mtu=lots")
    with pytest.raises(ValueError, match="FOUND"):
        events.parse("FOUND somewhere")


def test_a_field_before_the_last_cannot_hold_spaces() -> None:
    with pytest.raises(ValueError, match="address"):
        events.format_line(events.Found("AA BB", "SN-1"))
    assert events.format_line(events.Found("AA:BB", "SN 1")) == "FOUND address=AA:BB dsn=SN 1"


def test_first_finds_the_first_event_of_a_kind() -> None:
    said = [events.SignedIn("alice"), events.Retry(1, "ConnectionError"), events.Retry(2, "X")]
    assert events.first(said, events.Retry) == events.Retry(1, "ConnectionError")
    assert events.first(said, events.Found) is None
