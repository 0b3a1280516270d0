"""The app asks the API for the strongest key encryption both it and the device support
(issue 11, item 4: no downgrade), and never for one the device will refuse."""

from __future__ import annotations

import provisioning_app as app
import pytest

from onboarding_ble import rules

FERNET, GCM = rules.FERNET_X25519, rules.HKDF_AES_GCM


@pytest.mark.parametrize(
    ("device_accepts", "chosen"),
    [
        ((FERNET, GCM), GCM),  # a version-2 device with the default minimum
        ((GCM,), GCM),  # a device whose firmware refuses fernet-x25519
        ((FERNET,), FERNET),  # a device that implements only the old scheme
        (None, FERNET),  # a version-1 device says nothing: the scheme every device implements
    ],
)
def test_the_strongest_scheme_both_support_is_chosen(device_accepts, chosen) -> None:
    assert app.choose_scheme(device_accepts) == chosen


def test_a_scheme_asked_for_is_used_when_the_device_accepts_it() -> None:
    assert app.choose_scheme((FERNET, GCM), FERNET) == FERNET
    assert app.choose_scheme(None, GCM) == GCM  # the user knows this version-1 device


@pytest.mark.parametrize(
    ("device_accepts", "wanted"), [((GCM,), FERNET), ((), None)], ids=["refused", "none known"]
)
def test_no_certificate_is_requested_for_a_scheme_the_device_refuses(
    device_accepts, wanted
) -> None:
    with pytest.raises(app.AppError) as caught:
        app.choose_scheme(device_accepts, wanted)
    assert caught.value.exit_code == app.EXIT_DEVICE_REJECTED
