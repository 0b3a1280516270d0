"""What the deploy tools need to know of ``template.yaml``, and its conditions evaluated.

The pre-flight and ``destroy`` need little: the parameters' defaults, the conditions, each
resource's type, deletion policy and reserved concurrency, the functions' runtimes and whether
the API writes access logs. The template is read by the offline stack's reader
(``devstack.cloudformation.template.load_yaml``, short-form tags as ``Fn::`` objects), and this
module evaluates the conditions (``!Ref``, ``!If``, ``!Equals``, ``!Not``, ``!And``, ``!Or``,
``!Condition``) for a set of parameter values, without the SAM translator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.cloudformation.template import load_yaml
from devstack.errors import DeployError

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"

_NO_VALUE = "AWS::NoValue"


class TemplateError(ValueError):
    """A part of the template this reader does not understand (the template changed shape)."""


@dataclass(frozen=True)
class Resource:
    logical_id: str
    type: str
    retained: bool  # DeletionPolicy: Retain
    condition: str | None
    reserved_concurrency: Any = None  # the expression of ReservedConcurrentExecutions, if any
    runtime: str | None = None


@dataclass
class Template:
    defaults: dict[str, str | None] = field(default_factory=dict)  # None: no default
    conditions: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    global_runtime: str | None = None
    access_log_condition: str | None = None  # the condition AccessLogSetting's !If names
    # AccessLogSetting without a condition, or execution logging (MethodSettings LoggingLevel)
    access_log_always: bool = False

    def values(self, overrides: Mapping[str, str] | None = None) -> dict[str, str | None]:
        """Each parameter's value: the override, else the default (None: none given)."""
        result = dict(self.defaults)
        result.update(overrides or {})
        return result

    def evaluate(self, expression: Any, values: Mapping[str, str | None]) -> Any:
        """The value of an expression; ``None`` for ``AWS::NoValue``."""
        if isinstance(expression, dict):
            ((name, arg),) = expression.items()
            if name == "Ref":
                if arg == _NO_VALUE:
                    return None
                return values.get(arg, arg)
            if name == "Condition":
                return self.holds(arg, values)
            if name == "Fn::If":
                return self.evaluate(arg[1] if self.holds(arg[0], values) else arg[2], values)
            if name == "Fn::Equals":
                left, right = (self.evaluate(a, values) for a in arg)
                return str(left) == str(right)
            if name == "Fn::Not":
                return not self.evaluate(arg[0], values)
            if name == "Fn::And":
                return all(self.evaluate(a, values) for a in arg)
            if name == "Fn::Or":
                return any(self.evaluate(a, values) for a in arg)
            raise TemplateError(f"cannot evaluate {name}")
        if isinstance(expression, list):
            return [self.evaluate(item, values) for item in expression]
        return expression

    def holds(self, condition: str, values: Mapping[str, str | None]) -> bool:
        if condition not in self.conditions:
            raise TemplateError(f"unknown condition {condition!r}")
        return bool(self.evaluate(self.conditions[condition], values))

    def exists(self, resource: Resource, values: Mapping[str, str | None]) -> bool:
        return resource.condition is None or self.holds(resource.condition, values)

    def reserved_concurrency(self, values: Mapping[str, str | None]) -> dict[str, int]:
        """Concurrency each function reserves with these parameter values (none: absent)."""
        result = {}
        for resource in self.resources.values():
            if resource.reserved_concurrency is None or not self.exists(resource, values):
                continue
            value = self.evaluate(resource.reserved_concurrency, values)
            if value is not None:
                result[resource.logical_id] = int(value)
        return result

    def runtimes(self) -> set[str]:
        found = {r.runtime for r in self.resources.values() if r.runtime}
        functions = [r for r in self.resources.values() if r.type == "AWS::Serverless::Function"]
        if self.global_runtime and any(r.runtime is None for r in functions):
            found.add(self.global_runtime)
        return found

    def access_logging(self, values: Mapping[str, str | None]) -> bool:
        if self.access_log_always:
            return True
        return self.access_log_condition is not None and self.holds(
            self.access_log_condition, values
        )

    def retained(self) -> list[Resource]:
        return [r for r in self.resources.values() if r.retained]


def _text(value: Any) -> str | None:
    """A parameter default as CloudFormation reads it: a string (YAML's booleans as written)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load(path: Path = TEMPLATE) -> Template:
    """The facts, from the template as the offline stack reads it (short-form tags included)."""
    try:
        source = load_yaml(Path(path))
    except DeployError as exc:
        raise TemplateError(str(exc)) from exc
    template = Template()
    for name, spec in (source.get("Parameters") or {}).items():
        template.defaults[name] = _text(spec.get("Default"))
    template.conditions = dict(source.get("Conditions") or {})
    template.global_runtime = ((source.get("Globals") or {}).get("Function") or {}).get("Runtime")
    for name, spec in source["Resources"].items():
        properties = spec.get("Properties") or {}
        template.resources[name] = Resource(
            logical_id=name,
            type=spec.get("Type", ""),
            retained=spec.get("DeletionPolicy") == "Retain",
            condition=spec.get("Condition"),
            reserved_concurrency=properties.get("ReservedConcurrentExecutions"),
            runtime=properties.get("Runtime"),
        )
        for setting in properties.get("MethodSettings") or []:  # execution logging
            if setting.get("LoggingLevel", "OFF") != "OFF":
                template.access_log_always = True
        access = properties.get("AccessLogSetting")
        if isinstance(access, dict) and "Fn::If" in access:
            template.access_log_condition = access["Fn::If"][0]
        elif access is not None:
            template.access_log_always = True
    return template
