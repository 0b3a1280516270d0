"""What a function's IAM policy in template.yaml allows, and a recorder of what it really calls.

moto never checks IAM, so a call the template does not grant passes every offline test and
fails in AWS with AccessDenied. ``CallRecorder`` notes every operation a function makes (and,
for DynamoDB, the table and index), ``not_granted`` says which of them the template does not
allow that function. Actions are checked for every service; resources for DynamoDB, where the
template scopes each grant to one table or index.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
_PREFIX = {
    "dynamodb": "dynamodb",
    "iot": "iot",
    "acm-pca": "acm-pca",
    "iot-data-plane": "iot",  # iot-data Publish is authorised as iot:Publish
    "sns": "sns",
}
# TransactWriteItems is authorised item by item.
_TRANSACT_ITEMS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


@dataclass(frozen=True)
class Call:
    function: str
    action: str  # e.g. dynamodb:GetItem
    resource: str = ""  # DynamoDB: the table's logical id, "/index/<name>" for an index


@dataclass
class CallRecorder:
    """Records the calls made while ``acting_as(function)`` is in effect."""

    tables: dict[str, str]  # physical table name -> logical id
    calls: set[Call] = field(default_factory=set)
    function: str = ""

    @contextmanager
    def acting_as(self, function: str) -> Iterator[None]:
        outer, self.function = self.function, function
        try:
            yield
        finally:
            self.function = outer

    def watch(self, client: Any) -> None:
        prefix = _PREFIX[client.meta.service_model.service_id.hyphenize()]
        client.meta.events.register(
            "provide-client-params", lambda params, model, **_: self._note(prefix, model, params)
        )

    def _note(self, prefix: str, model: Any, params: dict[str, Any]) -> None:
        if not self.function:
            return
        if model.name == "TransactWriteItems":
            for item in params["TransactItems"]:
                ((kind, body),) = item.items()
                self._add(f"dynamodb:{_TRANSACT_ITEMS[kind]}", body.get("TableName"), None)
        else:
            self._add(f"{prefix}:{model.name}", params.get("TableName"), params.get("IndexName"))

    def _add(self, action: str, table: str | None, index: str | None) -> None:
        resource = self.tables.get(table or "", "")
        if resource and index:
            resource += f"/index/{index}"
        self.calls.add(Call(self.function, action, resource))


def not_granted(calls: set[Call]) -> list[Call]:
    template, errors = decode(str(TEMPLATE))
    assert not errors and template is not None
    resources = template["Resources"]
    missing = []
    for call in sorted(calls, key=lambda c: (c.function, c.action, c.resource)):
        statements = [
            s
            for policy in resources[call.function]["Properties"]["Policies"]
            for s in policy["Statement"]
        ]
        if not any(_allows(s, call) for s in statements):
            missing.append(call)
    return missing


def _allows(statement: dict[str, Any], call: Call) -> bool:
    if statement.get("Effect") != "Allow" or call.action not in _as_list(statement["Action"]):
        return False
    if not call.action.startswith("dynamodb:"):
        return True
    return call.resource in {_logical(r) for r in _as_list(statement["Resource"])}


def _logical(resource: Any) -> str:
    """A DynamoDB resource of the template as ``Table`` or ``Table/index/Name``."""
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        return str(resource["Fn::GetAtt"][0])
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        text = str(resource["Fn::Sub"])
        if text.startswith("${") and ".Arn}" in text:
            table, rest = text[2:].split(".Arn}", 1)
            return table + rest
    return str(resource)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
