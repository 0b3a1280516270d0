"""python -m bench.disconnect: how long a revoked (or released) device stays connected, offline.

Starts the offline stack, provisions ``--devices`` devices in CSR mode through the API and
connects each over MQTT with the device SDK (awsiotsdk, mutual TLS, client id = thing name).
Then, one device at a time, the owner revokes it (``DELETE /devices/{dsn}/certificate``) or
releases it (``DELETE /devices/{dsn}``), and the time from the API's answer to the device
SDK's ``on_connection_interrupted`` is taken. A figure at or below 0 means the connection was
closed before the API answered.

Two mechanisms can close the connection, and the broker's log says which did, per device:
IoT's DeleteConnection, called by the function after the operation (offline: the iot-data
endpoint), which closes it before the function answers; or the broker's revocation watch,
which checks connected clients against the registry every ``WATCH_INTERVAL`` seconds (IoT
Core's own, slower, equivalent). The output names the mechanism the functions' code leads one
to expect, and the one the broker saw.

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in ("provisioning_lambda", "local", "example", "."):
    if str(ROOT / _path) not in sys.path:
        sys.path.insert(0, str(ROOT / _path))

from devstack.iot.broker import WATCH_INTERVAL  # noqa: E402
from devstack.stack import RunningStack, start_stack  # noqa: E402
from tests.support.mqtt_devices import MqttDevice, Provisioned, http, provision  # noqa: E402
from tests.support.offline import new_member  # noqa: E402

TEMPLATE = ROOT / "template.yaml"
DISCONNECT_WAIT = 30.0  # seconds to wait for one device's disconnect
OPERATIONS = {
    "revoke": "/devices/{dsn}/certificate",  # DELETE, the owner revokes the certificate
    "release": "/devices/{dsn}",  # DELETE, the owner releases the device
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def functions_call_delete_connection() -> bool:
    """Whether the Lambda code calls IoT's DeleteConnection (else only the watch can act)."""
    code = ROOT / "provisioning_lambda" / "provisioning"
    return any("delete_connection" in path.read_text() for path in code.rglob("*.py"))


def mechanism(stack: RunningStack, thing: str) -> str:
    """What closed ``thing``'s connection, from the broker's log."""
    assert stack.mqtt is not None
    lines = stack.mqtt.log_file.read_text(encoding="utf-8").splitlines()
    for line in lines:
        if f"DISCONNECT client={thing} DeleteConnection" in line:
            return "DeleteConnection"
    for line in lines:
        if f"DISCONNECT client={thing} " in line:
            return "watch"
    return "unknown"


def measure(
    stack: RunningStack, operation: str, devices: int, home: Path, say: Callable[[str], None]
) -> None:
    owner = new_member(stack)
    provisioned: list[Provisioned] = [
        provision(stack, home / operation, owner) for _ in range(devices)
    ]
    connections = [MqttDevice(stack, device) for device in provisioned]
    latencies: list[float] = []
    seen: Counter[str] = Counter()
    try:
        for device, connection in zip(provisioned, connections, strict=True):
            url = stack.api_url + OPERATIONS[operation].format(dsn=device.dsn)
            status, body = http("DELETE", url, owner.id_token)
            answered = time.monotonic()
            if status != 200:
                say(f"  {operation} failed: {status} {body}")
                continue
            if not connection.interrupted.wait(DISCONNECT_WAIT):
                say(f"  {device.thing_name} still connected after {DISCONNECT_WAIT:g} s")
                seen["still connected"] += 1
                continue
            assert connection.interrupted_at is not None
            latencies.append(connection.interrupted_at - answered)
            seen[mechanism(stack, device.thing_name)] += 1
    finally:
        for connection in connections:
            connection.close()
    if latencies:
        say(
            f"  {operation:7s} -> disconnect  p50 {percentile(latencies, 0.5) * 1000:8.1f} ms"
            f"   p99 {percentile(latencies, 0.99) * 1000:8.1f} ms   ({len(latencies)} devices)"
        )
    say(f"  {operation:7s} disconnected by: " + ", ".join(f"{k} {v}" for k, v in seen.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=".venv/bin/python -m bench.disconnect", description=__doc__
    )
    parser.add_argument("--devices", type=int, default=20, help="devices per operation")
    args = parser.parse_args(argv)
    if functions_call_delete_connection():
        expected = "DeleteConnection (the functions call it before they answer)"
    else:
        expected = (
            f"the broker's revocation watch (every {WATCH_INTERVAL:g} s; the functions do not"
            " call DeleteConnection)"
        )
    print("time from the API's answer to the device's disconnect, offline")
    print(f"  expected mechanism: {expected}")
    with tempfile.TemporaryDirectory(prefix="bench-disconnect-") as directory:
        home = Path(directory)
        stack = start_stack(
            template=TEMPLATE,
            parameters={"AdminEmail": "bench@example.com"},
            lambda_log_dir=home / "logs",
        )
        try:
            for operation in OPERATIONS:
                measure(stack, operation, args.devices, home, print)
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
