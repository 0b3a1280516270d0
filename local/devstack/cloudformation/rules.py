"""The template's ``Rules``: checked against the parameters before anything is created.

CloudFormation evaluates every rule whose ``RuleCondition`` holds and refuses the whole stack
operation, naming the ``AssertDescription``, when one of its assertions is false; nothing is
created or changed. The offline deployer does the same, with the rule-specific functions
CloudFormation documents for this section (the subset this needs): ``Ref`` to a parameter,
``Fn::Equals``, ``Fn::Not``, ``Fn::And``, ``Fn::Or``, ``Fn::Contains``, ``Fn::EachMemberEquals``
and ``Fn::EachMemberIn``. Parameter values are compared as the strings they were given as.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from devstack.errors import DeployError


class RuleFailed(DeployError):
    """An assertion of the template's Rules is false for these parameters."""


def check_rules(rules: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
    """Raise RuleFailed for the first false assertion of a rule whose condition holds."""
    for name, rule in rules.items():
        if "RuleCondition" in rule and not _truth(rule["RuleCondition"], parameters):
            continue
        for assertion in rule.get("Assertions", []):
            if not _truth(assertion["Assert"], parameters):
                why = assertion.get("AssertDescription", "an assertion is false")
                raise RuleFailed(f"template rule {name} refuses these parameters: {why}")


def _value(value: Any, parameters: Mapping[str, Any]) -> Any:
    if isinstance(value, list):
        return [_value(item, parameters) for item in value]
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            if arg not in parameters:
                raise DeployError(f"a rule refers to {arg!r}, which is not a parameter")
            found = parameters[arg]
            return [str(v) for v in found] if isinstance(found, list) else str(found)
        function = _FUNCTIONS.get(key)
        if function is None:
            raise DeployError(f"{key} is not supported in the template's Rules offline")
        return function(arg, parameters)
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return value


def _truth(value: Any, parameters: Mapping[str, Any]) -> bool:
    result = _value(value, parameters)
    if isinstance(result, bool):
        return result
    raise DeployError(f"a rule does not evaluate to true or false: {value!r}")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


_FUNCTIONS: dict[str, Callable[[Any, Mapping[str, Any]], Any]] = {
    "Fn::Equals": lambda arg, p: _value(arg[0], p) == _value(arg[1], p),
    "Fn::Not": lambda arg, p: not _truth(arg[0], p),
    "Fn::And": lambda arg, p: all(_truth(item, p) for item in arg),
    "Fn::Or": lambda arg, p: any(_truth(item, p) for item in arg),
    "Fn::Contains": lambda arg, p: _value(arg[1], p) in _as_list(_value(arg[0], p)),
    "Fn::EachMemberEquals": lambda arg, p: all(
        item == _value(arg[1], p) for item in _as_list(_value(arg[0], p))
    ),
    "Fn::EachMemberIn": lambda arg, p: all(
        item in _as_list(_value(arg[1], p)) for item in _as_list(_value(arg[0], p))
    ),
}
