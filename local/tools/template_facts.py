"""What the deploy tools need to know of ``template.yaml``, read with the standard library only.

The pre-flight runs before anything is installed but boto3, so it cannot use a YAML library or
the SAM translator. It needs little: the parameters' defaults, the conditions, each resource's
type, deletion policy and reserved concurrency, the functions' runtimes and whether the API
writes access logs. This module reads those from the template's own layout (two-space
indentation, CloudFormation's short-form tags ``!Ref``, ``!If``, ``!Equals``, ``!Not``,
``!And``, ``!Or``, ``!Condition`` inline or as a block list) and evaluates the conditions for a
set of parameter values.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_:]+):(?:\s+(?P<rest>.*?))?\s*$")
_TOKEN = re.compile(r'\s*(\[|\]|,|![A-Za-z]+|"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^,\[\]]+)')
_FUNCTIONS = {"Ref": "Ref", "Condition": "Condition"}
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


# ---------------------------------------------------------------- expressions


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise TemplateError(f"cannot read {text!r}")
        token = match.group(1).strip()
        if token:
            tokens.append(token)
        position = match.end()
    return tokens


def _scalar(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token[1:-1]
    return token


def _tag(name: str, arg: Any) -> dict[str, Any]:
    return {_FUNCTIONS.get(name, f"Fn::{name}"): arg}


def _parse_flow(tokens: list[str], position: int = 0) -> tuple[Any, int]:
    token = tokens[position]
    if token.startswith("!"):
        value, position = _parse_flow(tokens, position + 1)
        return _tag(token[1:], value), position
    if token == "[":  # noqa: S105 - a YAML token, not a secret
        items: list[Any] = []
        position += 1
        while tokens[position] != "]":
            item, position = _parse_flow(tokens, position)
            items.append(item)
            if tokens[position] == ",":
                position += 1
        return items, position + 1
    return _scalar(token), position + 1


def parse_value(first: str, block: list[str]) -> Any:
    """A value: the text after ``key:`` and the more-indented lines after it."""
    first = first.split(" #", 1)[0].strip()
    if first and not (first.startswith("!") and len(_tokens(first)) == 1):
        tokens = _tokens(first)
        value, end = _parse_flow(tokens)
        if end != len(tokens):
            raise TemplateError(f"cannot read {first!r}")
        return value
    items = [line.strip()[2:] for line in block if line.strip().startswith("- ")]
    if len(items) != len([line for line in block if line.strip()]):
        raise TemplateError(f"cannot read the block after {first!r}")
    value = [parse_value(item, []) for item in items]
    return _tag(first[1:], value) if first else value


# ---------------------------------------------------------------- layout


def _entries(lines: list[str], indent: int) -> Iterator[tuple[str, str, list[str]]]:
    """(key, rest of line, the block under it) for each key at exactly ``indent``."""
    current: tuple[str, str] | None = None
    block: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            if current:
                block.append(line)
            continue
        match = _KEY.match(line)
        if match and len(match.group("indent")) == indent:
            if current:
                yield current[0], current[1], block
            current, block = (match.group("key"), match.group("rest") or ""), []
        elif current and len(line) - len(line.lstrip()) > indent:
            block.append(line)
        elif current:  # back out to a shallower level: the section ended
            yield current[0], current[1], block
            current, block = None, []
    if current:
        yield current[0], current[1], block


def _sections(text: str) -> dict[str, list[str]]:
    return {key: block for key, _rest, block in _entries(text.splitlines(), 0)}


def _find(block: list[str], key: str) -> Iterator[tuple[str, list[str]]]:
    """Every occurrence of ``key`` at any depth of a block, with its value's lines."""
    for index, line in enumerate(block):
        match = _KEY.match(line)
        if not match or match.group("key") != key:
            continue
        indent = len(match.group("indent"))
        under = []
        for following in block[index + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            under.append(following)
        yield match.group("rest") or "", under


def _first(block: list[str], key: str, indent: int) -> str | None:
    for name, rest, _under in _entries(block, indent):
        if name == key:
            return _scalar(rest.split(" #", 1)[0].strip())
    return None


def load(path: Path = TEMPLATE) -> Template:
    sections = _sections(Path(path).read_text(encoding="utf-8"))
    template = Template()
    for name, _rest, block in _entries(sections.get("Parameters", []), 2):
        template.defaults[name] = _first(block, "Default", 4)
    for name, rest, block in _entries(sections.get("Conditions", []), 2):
        template.conditions[name] = parse_value(rest, block)
    for name, _rest, block in _entries(sections.get("Globals", []), 2):
        if name == "Function":
            template.global_runtime = _first(block, "Runtime", 4)
    for name, _rest, block in _entries(sections.get("Resources", []), 2):
        properties = next(
            (under for key, _r, under in _entries(block, 4) if key == "Properties"), []
        )
        reserved = next(_find(properties, "ReservedConcurrentExecutions"), None)
        template.resources[name] = Resource(
            logical_id=name,
            type=_first(block, "Type", 4) or "",
            retained=_first(block, "DeletionPolicy", 4) == "Retain",
            condition=_first(block, "Condition", 4),
            reserved_concurrency=parse_value(*reserved) if reserved else None,
            runtime=_first(properties, "Runtime", 6),
        )
        for rest, _under in _find(properties, "LoggingLevel"):  # execution logging
            if _scalar(rest.split(" #", 1)[0].strip()) not in ("", "OFF"):
                template.access_log_always = True
        for rest, under in _find(properties, "AccessLogSetting"):
            if rest.strip() == "!If" and under:
                template.access_log_condition = under[0].strip().removeprefix("- ").strip()
            else:
                template.access_log_always = True
    return template
