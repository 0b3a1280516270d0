"""Keyed lookups for moto's IoT registry, where moto scans.

moto 5.2 finds a thing by name, a certificate by id or ARN, and a thing's or a certificate's
attachments by walking every thing, certificate or attachment it holds. AWS looks them up by
key. With a thousand devices registered, one provisioning's IoT calls then cost moto tens of
milliseconds of CPU each, and the offline load test measures moto's scans instead of the API
quotas it is meant to exercise. The lookups below give the same answers from indexes that
moto's own writes keep up to date; nothing else about moto's behaviour changes.

Applied by ``bench.load`` only, and only to moto ``MOTO_VERSION`` (``require_moto``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.moto_patches import require_moto

MOTO_VERSION = "5.2.5"  # the release whose private code the patches below replace
_applied = False


class PairIndex(dict[tuple[str, str], Any]):
    """moto's ``principal_things`` / ``principal_policies``: a dict keyed by (first, second),
    which also knows, for each first and each second, the keys that hold it."""

    def __init__(self, items: Iterable[tuple[tuple[str, str], Any]] = ()) -> None:
        super().__init__()
        self.by_first: dict[str, dict[tuple[str, str], None]] = {}
        self.by_second: dict[str, dict[tuple[str, str], None]] = {}
        for key, value in items:
            self[key] = value

    def __setitem__(self, key: tuple[str, str], value: Any) -> None:
        super().__setitem__(key, value)
        self.by_first.setdefault(key[0], {})[key] = None
        self.by_second.setdefault(key[1], {})[key] = None

    def __delitem__(self, key: tuple[str, str]) -> None:
        super().__delitem__(key)
        for index, part in ((self.by_first, key[0]), (self.by_second, key[1])):
            keys = index.get(part, {})
            keys.pop(key, None)
            if not keys:
                index.pop(part, None)

    def pop(self, key: tuple[str, str], *default: Any) -> Any:  # type: ignore[override]
        if key in self:
            value = self[key]
            del self[key]
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def clear(self) -> None:
        super().clear()
        self.by_first.clear()
        self.by_second.clear()

    def with_first(self, first: str) -> list[tuple[str, str]]:
        return list(self.by_first.get(first, ()))

    def with_second(self, second: str) -> list[tuple[str, str]]:
        return list(self.by_second.get(second, ()))


def apply() -> None:
    """Install the keyed lookups, once per process; ``MotoVersionError`` on another moto
    release."""
    global _applied
    if _applied:
        return
    require_moto(MOTO_VERSION, __name__)
    from moto.iot.exceptions import ResourceNotFoundException
    from moto.iot.models import IoTBackend

    original_init = IoTBackend.__init__

    def __init__(self: Any, region_name: str, account_id: str) -> None:
        original_init(self, region_name, account_id)
        self.principal_things = PairIndex(self.principal_things.items())
        self.principal_policies = PairIndex(self.principal_policies.items())

    def thing_arn(self: Any, thing_name: str) -> str:
        # FakeThing's own ARN: arn:<partition>:iot:<region>:<account>:thing/<name>
        return f"{self._arn_prefix()}:thing/{thing_name}"

    def _arn_prefix(self: Any) -> str:
        from moto.utilities.utils import get_partition

        return f"arn:{get_partition(self.region_name)}:iot:{self.region_name}:{self.account_id}"

    def describe_thing(self: Any, thing_name: str) -> Any:
        thing = self.things.get(thing_arn(self, thing_name))
        if thing is None or thing.thing_name != thing_name:
            raise ResourceNotFoundException()
        return thing

    def describe_certificate(self: Any, certificate_id: str) -> Any:
        certificate = self.certificates.get(certificate_id)
        if certificate is None:
            raise ResourceNotFoundException()
        return certificate

    original_get_principal = IoTBackend._get_principal

    def _get_principal(self: Any, principal_arn: str) -> Any:
        if ":cert/" in principal_arn:
            certificate = self.certificates.get(principal_arn.rsplit("/", 1)[-1])
            if certificate is None or certificate.arn != principal_arn:
                raise ResourceNotFoundException()
            return certificate
        return original_get_principal(self, principal_arn)

    def list_thing_principals(self: Any, thing_name: str) -> list[str]:
        if self.things.get(thing_arn(self, thing_name)) is None:
            raise ResourceNotFoundException(
                f"Failed to list principals for thing {thing_name} because the thing does not "
                "exist in your account"
            )
        return [key[0] for key in self.principal_things.with_second(thing_name)]

    def list_principal_things(self: Any, principal_arn: str) -> list[str]:
        return [key[1] for key in self.principal_things.with_first(principal_arn)]

    def list_attached_policies(self: Any, target: str) -> list[Any]:
        return [
            self.principal_policies[key][1] for key in self.principal_policies.with_first(target)
        ]

    original_delete_thing = IoTBackend.delete_thing

    def delete_thing(self: Any, thing_name: str) -> None:
        # moto walks every attachment to find this thing's; the index has them by name.
        from moto.iot.exceptions import ThingStillAttached

        self.describe_thing(thing_name)
        if self.principal_things.with_second(thing_name):
            raise ThingStillAttached(thing_name)
        original_delete_thing(self, thing_name)

    IoTBackend.__init__ = __init__  # type: ignore[method-assign]
    IoTBackend._arn_prefix = _arn_prefix  # type: ignore[attr-defined]
    IoTBackend.describe_thing = describe_thing  # type: ignore[method-assign]
    IoTBackend.describe_certificate = describe_certificate  # type: ignore[method-assign]
    IoTBackend._get_principal = _get_principal  # type: ignore[method-assign]
    IoTBackend.list_thing_principals = list_thing_principals  # type: ignore[method-assign]
    IoTBackend.list_thing_principals_v2 = list_thing_principals  # type: ignore[method-assign]
    IoTBackend.list_principal_things = list_principal_things  # type: ignore[method-assign]
    IoTBackend.list_principal_things_v2 = list_principal_things  # type: ignore[method-assign]
    IoTBackend.list_attached_policies = list_attached_policies  # type: ignore[method-assign]
    IoTBackend.delete_thing = delete_thing  # type: ignore[method-assign]
    _applied = True
