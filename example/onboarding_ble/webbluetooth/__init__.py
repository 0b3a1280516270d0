"""Web Bluetooth for a browser with no radio: Chromium's DevTools ``BluetoothEmulation``
domain, bridged to the virtual BLE radio and the real devices on it.

- ``cdp``: a small DevTools protocol client (one websocket, flattened sessions).
- ``chromium``: finding and starting Debian's ``chromium`` with a fresh profile and a DevTools
  port.
- ``emulation``: the pure parts: how a GATT characteristic, an address or an advertisement of
  the radio is declared to the emulation.
- ``bridge``: the bridge itself: the page's chooser offered the devices the radio hears (the
  first picked, or as ``Bridge.choose`` says), and
  every GATT operation the page makes forwarded to the device over the radio.

``command`` (``python -m onboarding_ble.webbluetooth``, ``make browser``) puts them together
for a person; the browser tests (tests/e2e/browser/) do the same under Playwright. It stands in
for a phone's Bluetooth radio, not for an AWS service, so it lives beside the virtual radio
(``onboarding_ble.radio``) rather than in the offline stack.
"""
