"""Work moto 5.2 repeats on every request where AWS does none, taken out.

Profiled under ``make load`` (py-spy on the stack's process, 1,000 devices), three of moto's
habits took about 60 % of the process's CPU, and the first grew with every device onboarded:

- ``TransactWriteItems`` deep-copies each whole table it writes to, as the backup it restores
  when the transaction is cancelled. A provisioning commits to the devices and the audit
  tables, so each commit copied every device row and every audit entry: quadratic over a
  factory line. Here the backup holds only the items the transaction names (its keys are in
  the request), which is all a cancelled transaction can have changed. A table with a stream
  keeps moto's whole-table backup, so its stream records are undone as before.
- ``CertificateAuthority.key`` parses (and so validates) the CA's RSA private key from PEM at
  every IssueCertificate. Here the parsed key is kept for the PEM bytes it came from.
- The server finds the backend for each request by matching its host against every service's
  URL patterns. Here the answer is kept per host (the patterns never change).

Answers, errors and rollbacks are unchanged (tests/unit/test_moto_costs.py). Applied by
``bench.load`` and in the test suite's processes (tests/support/once.py), never by the
offline stack itself, and only to moto ``MOTO_VERSION`` (``require_moto``).
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.moto_patches import require_moto

MOTO_VERSION = "5.2.5"  # the release whose private code the patches below replace
_applied = False
MAX_HOSTS_KEPT = 256  # hosts whose backend is kept (a stack uses a dozen)


def apply() -> None:
    """Install all three, once per process; ``MotoVersionError`` on another moto release."""
    global _applied
    if _applied:
        return
    require_moto(MOTO_VERSION, __name__)
    _transaction_backups_by_item()
    _parsed_ca_keys()
    _backends_by_host()
    _applied = True


class _TableCopies:
    """Stands in for the ``copy`` module inside moto's DynamoDB models: while a transaction of
    this thread backs up by item, a table's whole-table copy is the table itself (restoring it
    is then a no-op, and the item backup does the restoring)."""

    def __init__(self) -> None:
        self._state = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        from moto.dynamodb.models.table import Table

        if getattr(self._state, "by_item", False) and isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)

    @contextmanager
    def backing_up_by_item(self) -> Iterator[None]:
        self._state.by_item = True
        try:
            yield
        finally:
            self._state.by_item = False


def _transaction_backups_by_item() -> None:
    import moto.dynamodb.models as models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType

    copies = _TableCopies()
    models.copy = copies  # type: ignore[attr-defined,assignment]
    original = DynamoDBBackend.transact_write_items

    def saved_items(backend: Any, transact_items: list[dict[str, Any]]) -> list[Any] | None:
        """(table, hash, range, a copy of the item or None) for each item named; None when a
        table has a stream (moto's own backup then), or a key cannot be read (moto refuses)."""
        saved = []
        for request in transact_items:
            if len(request) != 1:
                return None
            ((operation, fields),) = request.items()
            table = backend.tables.get(fields.get("TableName"))
            if table is None:
                continue
            if table.stream_shard is not None:
                return None
            key = fields.get("Item") if operation == "Put" else fields.get("Key")
            try:
                hash_value = DynamoType(key[table.hash_key_attr])
                range_value = (
                    DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
                )
            except (KeyError, TypeError, AttributeError):
                return None
            item = (
                table.items.get(hash_value)
                if range_value is None
                else table.items.get(hash_value, {}).get(range_value)
            )
            saved.append((table, hash_value, range_value, copy.deepcopy(item)))
        return saved

    def restore(saved: list[Any]) -> None:
        for table, hash_value, range_value, item in reversed(saved):
            if range_value is None:
                if item is None:
                    table.items.pop(hash_value, None)
                else:
                    table.items[hash_value] = item
            elif item is None:
                table.items.get(hash_value, {}).pop(range_value, None)
            else:
                table.items.setdefault(hash_value, {})[range_value] = item

    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = saved_items(self, transact_items)
        if saved is None:
            return original(self, transact_items)
        try:
            with copies.backing_up_by_item():
                return original(self, transact_items)
        except BaseException:
            restore(saved)
            raise

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _parsed_ca_keys() -> None:
    from cryptography.hazmat.primitives import serialization
    from moto.acmpca.models import CertificateAuthority

    parsed: dict[tuple[bytes, bytes | None], Any] = {}
    lock = threading.Lock()

    def key(self: Any) -> Any:
        pem = (self.private_bytes, self.password)
        with lock:
            found = parsed.get(pem)
        if found is None:
            found = serialization.load_pem_private_key(self.private_bytes, password=self.password)
            with lock:
                parsed[pem] = found
        return found

    CertificateAuthority.key = property(key)  # type: ignore[assignment,method-assign]


def _backends_by_host() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.get_backend_for_host

    @functools.wraps(original)
    def get_backend_for_host(self: Any, host: str | None) -> Any:
        # called under the application's own lock; a request names its host (service and
        # region), so the hosts kept are bounded, past which lookups are simply not kept
        found = self.__dict__.setdefault("_devstack_backends", {})
        if host in found:
            return found[host]
        backend = original(self, host)
        if len(found) < MAX_HOSTS_KEPT:
            found[host] = backend
        return backend

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]
