"""What changing each template parameter does to a running stack.

CloudFormation replaces a resource when an update changes one of its create-only properties
(the resource schemas list them as ``createOnlyProperties``; cfn-lint ships those schemas),
and a replaced resource changes every ``Ref`` and ``Fn::GetAtt`` that names it, which may
replace the resources reading them in turn. This module follows that chain for every
parameter of ``template.yaml``, after the SAM translation ``sam deploy`` performs:

1. Translate the template twice, with the defaults and with the one parameter changed, and
   diff the results (the SAM translator inlines some parameters).
2. Add every property that reaches the parameter through ``Ref``, ``Fn::Sub``, ``Fn::If``
   conditions or other intrinsics.
3. Classify each resource: a changed create-only property replaces it; any other change
   updates it in place; a changed ``Condition`` creates or deletes it. Replacements propagate
   through references until nothing changes.
4. A replacement fails when the new resource would carry the same custom name as the old one
   (CloudFormation creates the replacement first): for example a Cognito user whose e-mail
   changed but whose ``Username`` did not.

``.venv/bin/python -m tools.deploy_safety`` prints the table that docs/parameters.md holds.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

from devstack.cloudformation.intrinsics import Resolver
from devstack.cloudformation.template import expand, load_yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
REGION = "us-east-1"
# Parameters without a default need a value to translate the template.
REQUIRED_VALUES = {"AdminEmail": "admin@example.com"}
# Values tried, in order, as "another value" of a parameter; the first one its constraints
# accept and that differs from the default is used.
_CANDIDATES = (
    "X",
    "AB",
    "x-1",
    "other@example.com",
    "https://app.example.com",
    "unreserved",
    "1",
    "2",
)
# Resources no parameter may replace, and why.
MUST_SURVIVE = {
    "AWS::DynamoDB::Table": "device ownership and the audit trail live there",
    "AWS::Cognito::UserPool": "every user and every device's owner (the `sub`) live there",
}
# Each table's global secondary indexes in the last release. A stack deployed from it reaches
# this template's indexes through the values of UPGRADE_PARAMETER, in their AllowedValues order
# (the last is the default), one index creation or deletion per table and deploy at most.
RELEASED_INDEXES: dict[str, tuple[str, ...]] = {"DevicesTable": ("SweepIndex",), "AuditTable": ()}
UPGRADE_PARAMETER = "IndexUpgradeStep"
# What the resource schemas leave out: properties CloudFormation documents as "Update requires:
# Replacement" that the bundled schema does not list as create-only.
_EXTRA_CREATE_ONLY = {
    "AWS::Cognito::UserPool": ("/properties/AliasAttributes", "/properties/UsernameAttributes"),
}


class Change(Enum):
    UPDATE = "updates"
    REPLACE = "replaces"
    TOGGLE = "creates or deletes"
    FAIL = "fails to replace"


@dataclass(frozen=True)
class Effect:
    resource: str
    type: str
    change: Change
    properties: tuple[str, ...]
    retained: bool = False  # UpdateReplacePolicy: Retain keeps the old one on replacement
    reason: str = "same name"  # why a FAIL fails

    def describe(self) -> str:
        text = f"{self.change.value} {self.resource}"
        if self.change is Change.REPLACE and self.retained:
            text += " (old one kept)"
        if self.change is Change.FAIL:
            text += f" ({self.reason}: the update fails and rolls back)"
        return text


@dataclass(frozen=True)
class ParameterEffects:
    parameter: str
    default: str
    other_value: str
    effects: tuple[Effect, ...] = field(default=())

    def of(self, change: Change) -> list[Effect]:
        return [e for e in self.effects if e.change is change]


# ---------------------------------------------------------------- references


def _sub_names(text: str) -> Iterator[str]:
    for match in re.finditer(r"\$\{([^}!][^}]*)\}", text):
        yield match.group(1).split(".", 1)[0]


def references(value: Any, conditions: Mapping[str, Any]) -> set[str]:
    """Every parameter, pseudo parameter or resource a value depends on."""
    found: set[str] = set()
    stack = [value]
    seen_conditions: set[str] = set()
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        for key, arg in item.items():
            if key == "Ref" and isinstance(arg, str):
                found.add(arg)
            elif key == "Fn::GetAtt":
                target = arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0]
                found.add(target)
            elif key == "Fn::Sub":
                text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                found.update(n for n in _sub_names(text) if n not in local)
                stack.append(local)
            elif key in ("Fn::If", "Condition"):
                name = arg[0] if key == "Fn::If" else arg
                if isinstance(name, str) and name not in seen_conditions:
                    seen_conditions.add(name)
                    stack.append(conditions.get(name))
                if key == "Fn::If":
                    stack.extend(arg[1:])
            else:
                stack.append(arg)
    return found


def _leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, value) of every property down to the first intrinsic or scalar."""
    if isinstance(value, dict) and not any(k == "Ref" or k.startswith("Fn::") for k in value):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list) and not path:
        yield path, value
    else:
        yield path, value


def _diff(old: Any, new: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in set(old) | set(new):
            yield from _diff(old.get(key), new.get(key), (*path, key))
    elif old != new:
        yield path


# ---------------------------------------------------------------- schemas


@cache
def _schema(resource_type: str) -> dict[str, Any]:
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    schema: dict[str, Any] = PROVIDER_SCHEMA_MANAGER.get_resource_schema(
        REGION, resource_type
    ).schema
    return schema


def _pointer_path(pointer: str) -> tuple[str, ...]:
    parts = pointer.split("/")
    assert parts[:2] == ["", "properties"], pointer
    return tuple(parts[2:])


def create_only(resource_type: str) -> list[tuple[str, ...]]:
    if resource_type.startswith("Custom::"):
        return []  # the custom resource's function decides on Update
    pointers = list(_schema(resource_type).get("createOnlyProperties", []))
    pointers += _EXTRA_CREATE_ONLY.get(resource_type, ())
    return [_pointer_path(p) for p in pointers]


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """One path lies under the other (``*`` in a schema pointer matches any key or index)."""
    return all(x == y or "*" in (x, y) for x, y in zip(a, b, strict=False))


def _same_name_on_replace(
    resource_type: str, properties: Mapping[str, Any], changed: set[tuple[str, ...]]
) -> bool:
    """The replacement would be created with the old one's identifier: CloudFormation fails."""
    if resource_type.startswith("Custom::"):
        return False
    schema = _schema(resource_type)
    identifier = [_pointer_path(p) for p in schema.get("primaryIdentifier", [])]
    read_only = {_pointer_path(p) for p in schema.get("readOnlyProperties", [])}
    if not identifier or any(p in read_only or p[0] not in properties for p in identifier):
        return False  # part of the identifier is generated: the replacement gets a new one
    return not any(_overlaps(p, c) for p in identifier for c in changed)


# ---------------------------------------------------------------- the computation


def _parameters(source: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    parameters: dict[str, dict[str, Any]] = source.get("Parameters", {})
    return parameters


def _defaults(source: Mapping[str, Any]) -> dict[str, str]:
    values = {
        name: str(spec["Default"])
        for name, spec in _parameters(source).items()
        if "Default" in spec
    }
    return {**values, **REQUIRED_VALUES}


def _accepts(spec: Mapping[str, Any], value: str) -> bool:
    if "AllowedValues" in spec:
        return value in [str(v) for v in spec["AllowedValues"]]
    if spec.get("Type") == "Number":
        if not re.fullmatch(r"-?\d+", value):
            return False
        low, high = spec.get("MinValue", -(10**9)), spec.get("MaxValue", 10**9)
        return bool(low <= int(value) <= high)
    pattern = spec.get("AllowedPattern")
    if pattern and not re.fullmatch(pattern, value):
        return False
    return bool(spec.get("MinLength", 0) <= len(value) <= spec.get("MaxLength", 4096))


def other_value(spec: Mapping[str, Any], current: str) -> str:
    candidates = [str(v) for v in spec.get("AllowedValues", [])]
    if (
        spec.get("Type") == "Number"
        and current.lstrip("-").isascii()
        and current.lstrip("-").isdigit()
    ):
        candidates += [str(int(current) + 1), str(int(current) - 1)]
    candidates += [current + "x", *_CANDIDATES]
    for candidate in candidates:
        if candidate != current and _accepts(spec, candidate):
            return candidate
    raise ValueError(f"no other valid value found for a parameter with {dict(spec)}")


def _translate(path: Path, values: Mapping[str, str]) -> dict[str, Any]:
    template: dict[str, Any] = expand(path, dict(values), REGION).template
    return template


def effects_of(
    parameter: str,
    base: Mapping[str, Any],
    changed_template: Mapping[str, Any],
    values: tuple[Mapping[str, str], Mapping[str, str]] = ({}, {}),
) -> tuple[Effect, ...]:
    """What one parameter's change does, given the translations before and after it (and the
    parameter values of each, for what is only known once conditions are evaluated)."""
    conditions = base.get("Conditions", {})
    resources: dict[str, Any] = base["Resources"]
    after: dict[str, Any] = changed_template["Resources"]
    changed: dict[str, set[tuple[str, ...]]] = {name: set() for name in resources}
    toggled: set[str] = set()
    for name, resource in resources.items():
        if name not in after:
            continue
        props = resource.get("Properties", {})
        for path, value in _leaves(props):
            if parameter in references(value, conditions):
                changed[name].add(path)
        changed[name].update(_diff(props, after[name].get("Properties", {})))
        condition = resource.get("Condition")
        if condition and parameter in references({"Condition": condition}, conditions):
            toggled.add(name)
    # Logical ids the translator derives from the parameter's value: a new resource, old gone.
    renamed = set(resources) - set(after)

    replaced = set(renamed)
    while True:
        for name, resource in resources.items():
            props = resource.get("Properties", {})
            for path, value in _leaves(props):
                if references(value, conditions) & replaced:
                    changed[name].add(path)
        now = replaced | {
            name
            for name, resource in resources.items()
            if any(_overlaps(c, p) for c in changed[name] for p in create_only(resource["Type"]))
        }
        if now == replaced:
            break
        replaced = now

    result = []
    for name, resource in resources.items():
        kind = resource["Type"]
        paths = tuple(sorted(".".join(p) for p in changed[name] if p))
        retained = resource.get("UpdateReplacePolicy") == "Retain"
        if name in toggled:
            result.append(Effect(name, kind, Change.TOGGLE, paths))
        elif name in replaced:
            props = resource.get("Properties", {})
            fails = name not in renamed and _same_name_on_replace(kind, props, changed[name])
            change = Change.FAIL if fails else Change.REPLACE
            result.append(Effect(name, kind, change, paths, retained))
        elif changed[name]:
            operations = index_operations(
                global_indexes(base, name, values[0]),
                global_indexes(changed_template, name, values[1]),
            )
            if operations > 1:
                reason = f"{operations} index creations or deletions in one table update"
                result.append(Effect(name, kind, Change.FAIL, paths, reason=reason))
            else:
                result.append(Effect(name, kind, Change.UPDATE, paths))
    return tuple(result)


# ---------------------------------------------------------------- table indexes


def global_indexes(
    template: Mapping[str, Any], name: str, values: Mapping[str, str]
) -> dict[str, Any]:
    """The global secondary indexes of table ``name`` by index name, its conditions evaluated
    with the parameter ``values``."""
    resource = template["Resources"].get(name, {})
    if resource.get("Type") != "AWS::DynamoDB::Table":
        return {}
    resolver = Resolver(
        ref=lambda ref: values.get(ref, ref),
        getatt=lambda logical_id, attribute: f"{logical_id}.{attribute}",
        conditions=template.get("Conditions", {}),
    )
    indexes = resolver.resolve(resource.get("Properties", {}).get("GlobalSecondaryIndexes", []))
    return {str(index["IndexName"]): index for index in indexes}


def index_operations(old: Mapping[str, Any], new: Mapping[str, Any]) -> int:
    """How many index creations and deletions DynamoDB needs to go from ``before`` to ``after``.

    CloudFormation makes one UpdateTable call per table update, and DynamoDB creates or deletes
    at most one global secondary index per call: an update needing more fails ("Cannot perform
    more than one GSI creation or deletion in a single update") and rolls back. An index whose
    keys or projection change is deleted and created again (two operations).
    """
    operations = len(old.keys() ^ new.keys())
    for name in old.keys() & new.keys():
        keys = ("KeySchema", "Projection")
        if any(old[name].get(k) != new[name].get(k) for k in keys):
            operations += 2
    return operations


def compute(path: Path = TEMPLATE) -> list[ParameterEffects]:
    """The effects of changing each parameter of the template at ``path``, in its order.

    The upgrade parameter is taken through its steps, in order, one deploy each; going back
    is not an upgrade (and may fail, which its note says).
    """
    source = load_yaml(path)
    defaults = _defaults(source)
    base = _translate(path, defaults)
    table = []
    for name, spec in _parameters(source).items():
        current = defaults[name]
        if name == UPGRADE_PARAMETER:
            table.append(_upgrade_row(path, defaults, spec))
            continue
        changed_value = other_value(spec, current)
        changed = _translate(path, {**defaults, name: changed_value})
        changed_values = {**defaults, name: changed_value}
        effects = effects_of(name, copy.deepcopy(base), changed, (defaults, changed_values))
        table.append(ParameterEffects(name, current, changed_value, effects))
    return table


def _upgrade_row(
    path: Path, defaults: Mapping[str, str], spec: Mapping[str, Any]
) -> ParameterEffects:
    order = [str(value) for value in spec["AllowedValues"]]
    effects: dict[tuple[str, Change], Effect] = {}
    for before, after in itertools.pairwise(order):
        values = ({**defaults, UPGRADE_PARAMETER: before}, {**defaults, UPGRADE_PARAMETER: after})
        step = effects_of(
            UPGRADE_PARAMETER, _translate(path, values[0]), _translate(path, values[1]), values
        )
        for effect in step:
            effects.setdefault((effect.resource, effect.change), effect)
    return ParameterEffects(
        UPGRADE_PARAMETER, order[-1], " then ".join(order), tuple(effects.values())
    )


def upgrade_steps(path: Path = TEMPLATE) -> list[tuple[str, dict[str, tuple[str, ...]]]]:
    """Each table's indexes at each step of an upgrade from the last release, in order: the
    release itself first, then one entry per value of the upgrade parameter."""
    source = load_yaml(path)
    defaults = _defaults(source)
    spec = _parameters(source).get(UPGRADE_PARAMETER)
    order = [str(v) for v in spec["AllowedValues"]] if spec else [""]
    steps = [("released", dict(RELEASED_INDEXES))]
    for value in order:
        values = {**defaults, UPGRADE_PARAMETER: value} if spec else defaults
        template = _translate(path, values)
        steps.append(
            (
                value or "default",
                {t: tuple(global_indexes(template, t, values)) for t in RELEASED_INDEXES},
            )
        )
    return steps


def upgrade_problems(path: Path = TEMPLATE) -> list[str]:
    """Steps of the upgrade from the last release that DynamoDB would refuse."""
    problems = []
    steps = upgrade_steps(path)
    for (_, before), (value, after) in itertools.pairwise(steps):
        for table, indexes in after.items():
            changes = sorted(set(before[table]) ^ set(indexes))
            if len(changes) > 1:
                problems.append(
                    f"{UPGRADE_PARAMETER}={value}: {table} changes {len(changes)} indexes "
                    f"({', '.join(changes)}); DynamoDB takes one per update"
                )
    return problems


def violations(table: list[ParameterEffects]) -> list[str]:
    """Parameters that replace what must survive, or whose change fails the update."""
    problems = []
    for row in table:
        for effect in row.effects:
            if effect.change is Change.FAIL:
                problems.append(f"{row.parameter}: {effect.describe()}")
            if effect.change in (Change.REPLACE, Change.TOGGLE) and effect.type in MUST_SURVIVE:
                why = MUST_SURVIVE[effect.type]
                problems.append(f"{row.parameter}: {effect.describe()}; {why}")
    return problems


# ---------------------------------------------------------------- the table


# A sentence for the operator where the bare effect does not say enough.
NOTES = {
    "AppOrigin": (
        "The function's CORS headers change at once; API Gateway's (preflight, errors) only once "
        "the stage is deployed again, which SAM does not do for a parameter: run `aws apigateway "
        "create-deployment --rest-api-id <API id> --stage-name <StageName>` after the update "
        '(README.md, "The phone app").'
    ),
    "RenewalMinIntervalSeconds": (
        "Applies to the next renewal request; a device refused as too soon is told when to retry."
    ),
    "RenewalReservedConcurrency": (
        "Renewals throttled for more than 3 minutes are dropped; the devices retry on their own."
    ),
    "AdminEmail": (
        "A new administrator for the new address (the username carries it) takes over the "
        "e-mail alias; the old user stays in the pool, outside the Administrators group."
    ),
    "AdminUsername": (
        "A new administrator with this name takes over the e-mail alias; the old user stays "
        "in the pool, outside the Administrators group."
    ),
    "StageName": "The API URL changes; apps must be given the new one.",
    "ThingGroupName": "New devices join the new group; the old group is kept with its devices.",
    "CaKeyAlgorithm": "A new CA: follow docs/runbook-ca-rotation.md (old CA kept, still billed).",
    "CaValidityYears": (
        "Re-issues the root certificate (same key and name); devices keep pinning the old "
        "one. Do not change on a running stack: rotate the CA (docs/runbook-ca-rotation.md)."
    ),
    "CaCommonName": (
        "A new root CA (the old one kept, still billed), which signs the same issuing CA "
        "again: devices that pin the old root refuse what it signs until they trust the new "
        "one. Do not change on a running stack (docs/runbook-ca-rotation.md)."
    ),
    "IssuingCaCommonName": (
        "A new issuing CA, registered with IoT; the old one is kept (Retain), so devices holding "
        "its certificates keep working until they renew (docs/runbook-ca-rotation.md); it is "
        "billed until deleted by hand."
    ),
    "IssuingCaValidityYears": (
        "Re-issues the issuing CA's certificate (same key and name); AWS IoT keeps the old "
        "registration. Do not change on a running stack: rotate the issuing CA "
        "(docs/runbook-ca-rotation.md)."
    ),
    "CaOrganization": "A new CA: follow docs/runbook-ca-rotation.md (old CA kept, still billed).",
    "CaOrganizationalUnit": "A new CA: follow docs/runbook-ca-rotation.md.",
    "CaLocality": "A new CA: follow docs/runbook-ca-rotation.md.",
    "CaState": "A new CA: follow docs/runbook-ca-rotation.md.",
    "CaCountry": "A new CA: follow docs/runbook-ca-rotation.md.",
    "CaCertificateMode": "Refused by the custom resource for the same CA (the update rolls back).",
    "CaUsageMode": (
        "Private CA's UsageMode is create-only: a new issuing CA in the new mode, registered "
        "with IoT; the old CA is kept (Retain), so devices holding its certificates keep "
        "working until rotated (docs/runbook-ca-rotation.md); it is billed until deleted by hand. "
        "SHORT_LIVED_CERTIFICATE needs DeviceCertValidityDays 1-7 and an ExpiryWatchSchedule of "
        "at most 6 hours: the template's rules refuse the update otherwise, before anything "
        "changes."
    ),
    "DeviceCertValidityDays": (
        "Certificates issued from now on. At most 7 with CaUsageMode SHORT_LIVED_CERTIFICATE "
        "(the template's rule refuses more). Also moves the expiry warning window."
    ),
    "ExpiryWarningPercent": "GET's expiry state and the next expiry watch use the new window.",
    "ExpiryWatchSchedule": (
        "The expiry watch's next run follows the new schedule. At most rate(6 hours) with "
        "CaUsageMode SHORT_LIVED_CERTIFICATE (the template's rule refuses longer)."
    ),
    "DeviceSubjectOrganization": "Certificates issued from now on; the CA is untouched.",
    "DeviceSubjectOrganizationalUnit": "Certificates issued from now on; the CA is untouched.",
    "DeviceSubjectCountry": "Certificates issued from now on; the CA is untouched.",
    "IndexUpgradeStep": (
        "Only to upgrade a stack from before DevicesTable's ExpiryIndex, OwnerIndex and "
        "StatusIndex: deploy 1, then 2, then complete, one new index each (DynamoDB's limit); "
        'docs/runbook.md, "Upgrading a running stack". Going back fails and rolls back.'
    ),
    "CreateApiGatewayAccountRole": (
        '"false" stops managing the account setting; the role is kept and stays set.'
    ),
}
BEGIN = "<!-- BEGIN generated by `.venv/bin/python -m tools.deploy_safety`; do not edit -->"
END = "<!-- END generated -->"


def _cell(row: ParameterEffects) -> str:
    order = (Change.FAIL, Change.REPLACE, Change.TOGGLE, Change.UPDATE)
    parts = []
    for change in order:
        names = [e for e in row.effects if e.change is change]
        if not names:
            continue
        if change is Change.UPDATE:
            parts.append("updates in place: " + ", ".join(e.resource for e in names))
        else:
            parts.append("; ".join(e.describe() for e in names))
    return "; ".join(parts) if parts else "nothing (no-op)"


def render(table: list[ParameterEffects]) -> str:
    lines = [
        BEGIN,
        "| parameter | default | changing it on a running stack | note |",
        "| --- | --- | --- | --- |",
    ]
    for row in table:
        default = "(required)" if row.parameter in REQUIRED_VALUES else f"`{row.default}`"
        if row.default == "" and row.parameter not in REQUIRED_VALUES:
            default = "empty"
        note = NOTES.get(row.parameter, "")
        lines.append(f"| `{row.parameter}` | {default} | {_cell(row)} | {note} |")
    lines.append(END)
    return "\n".join(lines)


def generated_section(markdown: str) -> str:
    """The generated table inside a document, markers included ("" if there is none)."""
    start, end = markdown.find(BEGIN), markdown.find(END)
    if start < 0 or end < start:
        return ""
    return markdown[start : end + len(END)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=".venv/bin/python -m tools.deploy_safety",
        description="Print what changing each template parameter does to a running stack.",
    )
    parser.add_argument("--template", type=Path, default=TEMPLATE, help="default: %(default)s")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a parameter replaces what must survive"
    )
    parser.add_argument(
        "--write", type=Path, metavar="DOC", help="replace the generated table in DOC"
    )
    args = parser.parse_args(argv)
    table = compute(args.template)
    text = render(table)
    if args.write:
        document = args.write.read_text(encoding="utf-8")
        old = generated_section(document)
        if not old:
            print(f"{args.write}: no generated table to replace ({BEGIN})", file=sys.stderr)
            return 2
        args.write.write_text(document.replace(old, text), encoding="utf-8")
    else:
        print(text)
    problems = violations(table) + upgrade_problems(args.template)
    for problem in problems:
        print(f"unsafe: {problem}", file=sys.stderr)
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
