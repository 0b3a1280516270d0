"""The offline stack's state file (``.local/stack.json``, written by ``devstack up``), read in
one place for the example's device and app: where the API, the user pool and the MQTT broker
are. A real device or app gets the same facts from its firmware configuration or the
deployed stack's Outputs instead.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_STATE = Path(".local/stack.json")  # where `make up` (devstack up) writes it


class OfflineStateError(ValueError):
    """The state file is missing, unreadable, or lacks a key the example needs."""


@dataclass(frozen=True)
class OfflineStack:
    api_url: str
    region: str
    user_pool_id: str
    client_id: str
    endpoint_url: str | None  # the AWS emulator (moto)
    admin_username: str | None
    admin_password: str | None
    mqtt_endpoint: str | None  # HOST:PORT of the broker standing in for IoT Core
    mqtt_ca: Path | None  # the PEM that signed the broker's server certificate
    thing_prefix: str | None = None  # the stack's ThingPrefix (Output), for the device's firmware

    @classmethod
    def load(cls, path: Path) -> OfflineStack:
        try:
            state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            outputs = state.get("outputs", {})
            admin = state.get("admin") or {}
            mqtt = state.get("mqtt") or {}
            return cls(
                api_url=state.get("api_url") or outputs["ApiUrl"],
                region=state.get("region", "us-east-1"),
                user_pool_id=outputs["UserPoolId"],
                client_id=outputs["UserPoolClientId"],
                endpoint_url=state.get("endpoint_url"),
                admin_username=admin.get("username"),
                admin_password=admin.get("password"),
                mqtt_endpoint=f"{mqtt['host']}:{mqtt['port']}" if mqtt else None,
                mqtt_ca=Path(mqtt["ca_file"]) if mqtt else None,
                thing_prefix=outputs.get("ThingPrefix"),
            )
        except FileNotFoundError:
            up = ".venv/bin/devstack up"
            if path != DEFAULT_STATE:
                up += f" --state {shlex.quote(str(path))}"
            raise OfflineStateError(
                f"{path}: no such file; the offline stack is not up (start it with `{up}`)"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OfflineStateError(f"{path}: not an offline stack state file ({exc!r})") from exc
