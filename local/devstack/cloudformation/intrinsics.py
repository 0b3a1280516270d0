"""CloudFormation intrinsic functions, evaluated against the local deployment's state.

Supported: Ref, Fn::GetAtt, Fn::Sub (with ``${!Literal}`` escapes and the list form),
Fn::Join, Fn::Select, Fn::Split, Fn::If, Fn::Equals, Fn::Not, Fn::And, Fn::Or, Condition,
Fn::Base64, Fn::GetAZs, AWS::NoValue and the pseudo parameters.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from typing import Any

from devstack.errors import DeployError

NO_VALUE = object()  # AWS::NoValue: the property disappears
_SUB_VAR = re.compile(r"\$\{([^}]*)\}")


class Unavailable(DeployError):
    """A value that depends on a resource the local deployment skipped."""


def _split_getatt(value: Any) -> tuple[str, str]:
    if isinstance(value, str):
        logical_id, _, attribute = value.partition(".")
    elif isinstance(value, list) and len(value) == 2:
        logical_id, attribute = value
    else:
        raise DeployError(f"malformed Fn::GetAtt {value!r}")
    if not isinstance(attribute, str):
        raise DeployError(f"Fn::GetAtt attribute must be a string: {value!r}")
    return logical_id, attribute


def references(value: Any) -> Iterator[str]:
    """Every logical name ``value`` refers to (resources or parameters), over all branches."""
    if isinstance(value, list):
        for item in value:
            yield from references(item)
        return
    if not isinstance(value, dict):
        return
    if len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref" and isinstance(arg, str):
            yield arg
            return
        if key == "Fn::GetAtt":
            yield _split_getatt(arg)[0]
            return
        if key == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            for name in _SUB_VAR.findall(text):
                if not name.startswith("!") and name not in variables:
                    yield name.split(".", 1)[0]
            yield from references(variables)
            return
    for item in value.values():
        yield from references(item)


class Resolver:
    """Evaluates intrinsics. ``ref`` and ``getatt`` look up deployed resources and parameters."""

    def __init__(
        self,
        *,
        ref: Callable[[str], Any],
        getatt: Callable[[str, str], Any],
        conditions: dict[str, Any],
    ) -> None:
        self._ref = ref
        self._getatt = getatt
        self._condition_defs = conditions
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            if name not in self._condition_defs:
                raise DeployError(f"unknown condition {name!r}")
            self._conditions[name] = bool(self._truth(self._condition_defs[name]))
        return self._conditions[name]

    def _truth(self, value: Any) -> bool:
        if isinstance(value, dict) and set(value) == {"Condition"}:
            return self.condition(value["Condition"])
        result = self.resolve(value)
        if isinstance(result, bool):
            return result
        if isinstance(result, str) and result.lower() in ("true", "false"):
            return result.lower() == "true"
        raise DeployError(f"condition does not evaluate to a boolean: {value!r}")

    def resolve(self, value: Any) -> Any:
        """Resolve ``value`` fully; dict keys and list items equal to AWS::NoValue disappear."""
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            function = self._functions().get(key)
            if function is not None:
                return function(arg)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def resolve_str(self, value: Any) -> str:
        result = self.resolve(value)
        if isinstance(result, bool):
            return "true" if result else "false"
        if isinstance(result, int | float):
            return str(result)
        if not isinstance(result, str):
            raise DeployError(f"expected a string, got {result!r} from {value!r}")
        return result

    def _functions(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "Ref": self._fn_ref,
            "Fn::GetAtt": self._fn_getatt,
            "Fn::Sub": self._fn_sub,
            "Fn::Join": self._fn_join,
            "Fn::Select": self._fn_select,
            "Fn::Split": self._fn_split,
            "Fn::If": self._fn_if,
            "Fn::Equals": self._fn_equals,
            "Fn::Not": lambda arg: not self._truth(arg[0]),
            "Fn::And": lambda arg: all(self._truth(item) for item in arg),
            "Fn::Or": lambda arg: any(self._truth(item) for item in arg),
            "Condition": self.condition,
            "Fn::Base64": lambda arg: base64.b64encode(self.resolve_str(arg).encode()).decode(),
            "Fn::GetAZs": self._fn_getazs,
        }

    def _fn_ref(self, name: Any) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        return self._ref(self.resolve_str(name))

    def _fn_getatt(self, arg: Any) -> Any:
        logical_id, attribute = _split_getatt(self.resolve(arg))
        return self._getatt(logical_id, attribute)

    def _fn_sub(self, arg: Any) -> str:
        if isinstance(arg, str):
            text, variables = arg, {}
        elif isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], dict):
            text, variables = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
        else:
            raise DeployError(f"malformed Fn::Sub {arg!r}")

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"  # ${!Literal} stays literally ${Literal}
            if name in variables:
                value = variables[name]
            elif "." in name:
                value = self._getatt(*name.split(".", 1))
            else:
                value = self._ref(name)
            return value if isinstance(value, str) else self.resolve_str(value)

        return _SUB_VAR.sub(substitute, text)

    def _fn_join(self, arg: Any) -> str:
        delimiter, items = arg
        values = self.resolve(items)
        if not isinstance(values, list):
            raise DeployError(f"Fn::Join needs a list, got {values!r}")
        return self.resolve_str(delimiter).join(self.resolve_str(item) for item in values)

    def _fn_select(self, arg: Any) -> Any:
        index, items = arg
        values = self.resolve(items)
        position = int(self.resolve_str(index))
        if not isinstance(values, list) or not 0 <= position < len(values):
            raise DeployError(f"Fn::Select index {position} out of range for {values!r}")
        return values[position]

    def _fn_split(self, arg: Any) -> list[str]:
        delimiter, text = arg
        return self.resolve_str(text).split(self.resolve_str(delimiter))

    def _fn_if(self, arg: Any) -> Any:
        name, when_true, when_false = arg
        return self.resolve(when_true if self.condition(name) else when_false)

    def _fn_equals(self, arg: Any) -> bool:
        left, right = (self.resolve(item) for item in arg)
        return bool(_canonical(left) == _canonical(right))

    def _fn_getazs(self, arg: Any) -> list[str]:
        region = self.resolve_str(arg) or self._ref("AWS::Region")
        return [f"{region}{suffix}" for suffix in "abc"]


def _canonical(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value
