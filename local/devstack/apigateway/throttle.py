"""API Gateway's stage throttling, as the template configures it: a token bucket per method.

The template sets throttling on the API's stage (``MethodSettings`` of the SAM API, from the
``ApiThrottleRateLimit`` and ``ApiThrottleBurstLimit`` parameters). API Gateway applies
per-stage limits at the method level: every method of the stage gets the ``/*`` ``*`` entry's
rate and burst, unless an entry for its own resource path and method says otherwise. Each
method is a token bucket: it holds at most ``burst`` tokens, starts full, gains ``rate``
tokens a second, and every request takes one; a request that finds no token is answered
``THROTTLED`` (429) by the gateway, before the authorizer runs and before any Lambda.

API Gateway's own 429 carries no ``Retry-After`` header unless the API's gateway responses add
one (AWS documents only the status); the template's ``THROTTLED`` gateway response adds a fixed
``Retry-After: 1`` and shapes the body, and the gateway renders it from there. The Lambda's own
429s (an AWS quota throttled it) carry ``Retry-After`` too.

Not emulated: the account-level limit (10,000 requests per second, burst 5,000 per Region),
usage plans and API keys, and the "best effort" slack AWS allows around the targets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.cloudformation.intrinsics import Resolver
from devstack.cloudformation.template import expand
from devstack.errors import DeployError

Clock = Callable[[], float]

_ANY_PATH = "/*"
_ANY_METHOD = "*"


class TokenBucket:
    """``burst`` tokens at most, ``rate`` more each second; thread-safe."""

    def __init__(self, rate: float, burst: float, *, clock: Clock = time.monotonic) -> None:
        if rate < 0 or burst < 0:
            raise ValueError("a token bucket needs a rate and a burst of at least 0")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = now

    def try_take(self) -> bool:
        """Take one token if there is one; False (nothing taken) if not."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def tokens(self) -> float:
        with self._lock:
            self._refill()
            return self._tokens


@dataclass(frozen=True)
class MethodThrottle:
    """One ``MethodSettings`` entry's throttling: which methods, what rate and burst."""

    resource_path: str  # "/*" or a resource path such as "/certificate"
    http_method: str  # "*" or an upper-case method
    rate: float
    burst: float


class StageThrottle:
    """The stage's throttling: one token bucket per (resource path, method), made on demand."""

    def __init__(self, settings: list[MethodThrottle], *, clock: Clock = time.monotonic) -> None:
        self.settings = list(settings)
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket | None] = {}
        self._lock = threading.Lock()

    def setting_for(self, resource_path: str, method: str) -> MethodThrottle | None:
        """The most specific entry for a method: its own, else its path's ``*``, else ``/*``."""
        method = method.upper()
        ranked = [
            (resource_path, method),
            (resource_path, _ANY_METHOD),
            (_ANY_PATH, method),
            (_ANY_PATH, _ANY_METHOD),
        ]
        for path, verb in ranked:
            for setting in self.settings:
                if setting.resource_path == path and setting.http_method == verb:
                    return setting
        return None

    def admit(self, resource_path: str, method: str) -> bool:
        """Whether the method's bucket has a token for this request (one is taken if so)."""
        key = (resource_path, method.upper())
        with self._lock:
            if key not in self._buckets:
                setting = self.setting_for(resource_path, method)
                self._buckets[key] = (
                    None
                    if setting is None
                    else TokenBucket(setting.rate, setting.burst, clock=self._clock)
                )
            bucket = self._buckets[key]
        return bucket is None or bucket.try_take()


def _decode_path(path: str) -> str:
    """MethodSettings name a resource as ``/`` + its path with slashes written ``~1`` (JSON
    Pointer escaping): ``/~1certificate`` is /certificate; ``/*`` is every resource."""
    if path == _ANY_PATH or not path.startswith("/"):
        return path
    return path[1:].replace("~1", "/").replace("~0", "~") or "/"


def method_throttles(method_settings: Any) -> list[MethodThrottle]:
    """The throttling entries of a Stage's resolved ``MethodSettings``."""
    throttles: list[MethodThrottle] = []
    for entry in method_settings or []:
        if not isinstance(entry, Mapping):
            continue
        rate = entry.get("ThrottlingRateLimit")
        burst = entry.get("ThrottlingBurstLimit")
        if rate is None and burst is None:
            continue
        try:
            throttles.append(
                MethodThrottle(
                    resource_path=_decode_path(str(entry.get("ResourcePath", _ANY_PATH))),
                    http_method=str(entry.get("HttpMethod", _ANY_METHOD)).upper(),
                    # API Gateway's account defaults stand in for a half-configured entry.
                    rate=float(rate if rate is not None else 10000),
                    burst=float(burst if burst is not None else 5000),
                )
            )
        except (TypeError, ValueError) as exc:
            raise DeployError(
                f"MethodSettings: throttling values are not numbers: {entry}"
            ) from exc
    return throttles


def stage_throttle_from_template(
    template: Path,
    parameters: Mapping[str, str],
    *,
    region: str,
    api_logical_id: str,
    physical_ids: Mapping[str, str],
    clock: Clock = time.monotonic,
) -> StageThrottle | None:
    """The throttling of the stage ``sam deploy`` would create for the API, or None if none.

    The template is expanded by the SAM translator exactly as the deployer does, and the
    Stage's ``MethodSettings`` resolved with the same parameter values (overrides, else the
    template's defaults). The deployment does not keep the Stage's settings itself, so they
    are read here from the same source, not from a copy.
    """
    expanded = expand(template, dict(parameters), region).template
    declared: dict[str, Any] = expanded.get("Parameters", {})
    values: dict[str, Any] = {
        name: parameters.get(name, spec.get("Default")) for name, spec in declared.items()
    }

    def ref(name: str) -> Any:
        if name in values:
            return values[name]
        if name in physical_ids:
            return physical_ids[name]
        return name  # a resource the stage only points at; its value does not matter here

    def getatt(logical_id: str, attribute: str) -> Any:
        return f"{logical_id}.{attribute}"

    resolver = Resolver(ref=ref, getatt=getatt, conditions=expanded.get("Conditions", {}))
    for resource in expanded.get("Resources", {}).values():
        if resource.get("Type") != "AWS::ApiGateway::Stage":
            continue
        properties = resource.get("Properties", {})
        if properties.get("RestApiId") != {"Ref": api_logical_id}:
            continue
        settings = method_throttles(resolver.resolve(properties.get("MethodSettings", [])))
        return StageThrottle(settings, clock=clock) if settings else None
    return None
