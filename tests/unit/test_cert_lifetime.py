"""`devstack up --cert-lifetime`: what it accepts, and which certificates it shortens (device
certificates only, never longer than asked; devstack.moto_bridges.lifetime)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from devstack.cli import build_parser
from devstack.moto_bridges import lifetime

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
A_YEAR = NOW + timedelta(days=365)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10m", timedelta(minutes=10)), ("90s", timedelta(seconds=90)), ("24h", timedelta(days=1))],
)
def test_up_takes_a_lifetime_in_seconds_minutes_or_hours(text: str, expected: timedelta) -> None:
    args = build_parser().parse_args(["up", "--cert-lifetime", text])
    assert args.cert_lifetime == expected


@pytest.mark.parametrize("text", ["10", "5d", "-1m", "0m", "59s", "25h", "1.5m", "ten minutes"])
def test_up_refuses_anything_else_naming_it(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(["up", f"--cert-lifetime={text}"])
    assert refused.value.code == 2
    assert f"--cert-lifetime: {text!r}" in capsys.readouterr().err


def test_without_a_lifetime_every_certificate_gets_the_validity_asked() -> None:
    assert lifetime.device_lifetime() is None
    assert lifetime.not_after(A_YEAR, NOW, ExtendedKeyUsageOID.CLIENT_AUTH) == A_YEAR


def test_a_lifetime_shortens_device_certificates_only_and_never_lengthens_one() -> None:
    with lifetime.device_lifetime_of(timedelta(minutes=10)):
        ten_minutes = NOW + timedelta(minutes=10)
        assert lifetime.not_after(A_YEAR, NOW, ExtendedKeyUsageOID.CLIENT_AUTH) == ten_minutes
        assert lifetime.not_after(None, NOW, ExtendedKeyUsageOID.CLIENT_AUTH) == ten_minutes
        sooner = NOW + timedelta(minutes=2)
        assert lifetime.not_after(sooner, NOW, ExtendedKeyUsageOID.CLIENT_AUTH) == sooner
        # a server certificate, or a CA certificate (no end-entity template): as asked
        assert lifetime.not_after(A_YEAR, NOW, ExtendedKeyUsageOID.SERVER_AUTH) == A_YEAR
        assert lifetime.not_after(A_YEAR, NOW, None) == A_YEAR
    assert lifetime.device_lifetime() is None
