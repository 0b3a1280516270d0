"""Deploy ``template.yaml`` onto moto: the offline stand-in for ``sam deploy``.

The template goes through the SAM translator (as it does in CloudFormation), intrinsics are
resolved here, and each resource is created in dependency order with boto3 against either
moto's in-process mock (``mock_aws``, endpoint_url=None) or a moto server (endpoint_url).

This module orders the resources, resolves parameters, Ref and Fn::GetAtt, and hands each
resource to its service's module in devstack/cloudformation/resources/ with the shared
``DeployState``:
- dynamodb.py, cognito.py, acmpca.py, iot.py, logs.py, sns.py: created with boto3, as CloudFormation
  would;
- lambda_.py: functions recorded (handler, code directory, resolved environment, timeout,
  reserved concurrency) and run by an ``Invoker`` (devstack.awslambda.runtime): worker processes
  for the offline stack, in-process under ``mock_aws``; nothing is created in moto;
- iam.py, apigateway.py: given physical IDs but not created; the API's routes, authorizers and
  models become the API model the local gateway reads (devstack.apigateway.api_model);
- custom.py: custom resources, the real handler run through the invoker with a Create event;
- iot_rules.py: topic rules (checked against the IoT SQL the offline broker runs) and Lambda
  permissions, kept for the broker (devstack.iot.topic_rules), not created in moto.
The template's ``Rules`` are checked first (devstack.cloudformation.rules): a combination they
refuse fails before anything is created.
Any other resource type gets a name and an ARN only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from devstack.apigateway.api_model import ApiSpec, CognitoAuthorizer, Route
from devstack.awslambda.runtime import FunctionSpec, InProcessInvoker, Invoker
from devstack.cloudformation.intrinsics import Resolver, Unavailable, references
from devstack.cloudformation.resources import CREATORS, apigateway, custom
from devstack.cloudformation.resources.base import URL_SUFFIX, DeployState, Progress
from devstack.cloudformation.resources.cognito import generate_password
from devstack.cloudformation.rules import check_rules
from devstack.cloudformation.template import expand
from devstack.errors import DeployError
from devstack.iot.topic_rules import Permission, TopicRule

__all__ = [  # the API model and generate_password are re-exported for older importers
    "ApiSpec",
    "CognitoAuthorizer",
    "Deployment",
    "FunctionSpec",
    "Route",
    "deploy",
    "generate_password",
]

DEFAULT_STACK_NAME = "devstack"


@dataclass
class Deployment:
    """What the local deployment made; what tests and the offline stack need to use it."""

    stack_name: str
    stack_id: str
    region: str
    account_id: str
    endpoint_url: str | None
    outputs: dict[str, str]
    functions: dict[str, FunctionSpec]
    apis: dict[str, ApiSpec]
    admin_username: str | None
    admin_password: str | None
    user_passwords: dict[str, str]  # Cognito username -> generated permanent password
    physical_ids: dict[str, str]
    attributes: dict[str, dict[str, Any]]
    custom_resources: dict[str, dict[str, Any]]  # logical ID -> Data the handler returned
    skipped: dict[str, str]  # logical ID -> why it was not created
    topic_rules: list[TopicRule] = field(default_factory=list)  # for the offline broker
    permissions: list[Permission] = field(default_factory=list)  # Lambda resource policies

    @property
    def api(self) -> ApiSpec:
        """The template's (single) REST API."""
        if len(self.apis) != 1:
            raise DeployError(f"expected one REST API in the template, found {sorted(self.apis)}")
        return next(iter(self.apis.values()))


class _Deployer:
    """One deployment: the template, its parameters, and the state the resources share."""

    def __init__(
        self,
        template_path: Path,
        parameters: dict[str, str],
        *,
        endpoint_url: str | None,
        region: str,
        stack_name: str,
        run_custom_resources: bool,
        progress: Progress | None,
        invoker: Invoker,
    ) -> None:
        expanded = expand(template_path, parameters, region)
        self.template = expanded.template
        self.state = DeployState(
            stack_name=stack_name,
            stack_id="",
            region=region,
            account_id="",
            endpoint_url=endpoint_url,
            code_uris=dict(expanded.code_uris),
            invoker=invoker,
            run_custom_resources=run_custom_resources,
            progress=progress,
        )
        account_id = self.state.client("sts").get_caller_identity()["Account"]
        self.state.account_id = account_id
        self.state.stack_id = (
            f"arn:aws:cloudformation:{region}:{account_id}:stack/{stack_name}/{uuid.uuid4()}"
        )
        self.parameters = self._parameter_values(parameters)
        self.resources: dict[str, dict[str, Any]] = self.template["Resources"]
        self.resolver = Resolver(
            ref=self._ref, getatt=self._getatt, conditions=self.template.get("Conditions", {})
        )

    def _parameter_values(self, overrides: dict[str, str]) -> dict[str, Any]:
        declared: dict[str, dict[str, Any]] = self.template.get("Parameters", {})
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise DeployError(f"parameters not in the template: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            if name in overrides:
                raw = str(overrides[name])
            elif "Default" in spec:
                raw = str(spec["Default"])
            else:
                raise DeployError(f"parameter {name} has no default: pass a value for it")
            _check_parameter(name, spec, raw)
            kind = spec.get("Type", "String")
            if kind in ("CommaDelimitedList", "List<Number>") or kind.startswith("List<"):
                values[name] = [item.strip() for item in raw.split(",")] if raw else []
            else:
                values[name] = raw
        return values

    def _ref(self, name: str) -> Any:
        state = self.state
        pseudo = {
            "AWS::Region": state.region,
            "AWS::AccountId": state.account_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": URL_SUFFIX,
            "AWS::StackName": state.stack_name,
            "AWS::StackId": state.stack_id,
            "AWS::NotificationARNs": [],
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in state.skipped:
            raise Unavailable(f"{name} was not created: {state.skipped[name]}")
        if name in state.physical_ids:
            return state.physical_ids[name]
        raise DeployError(f"Ref to {name}, which is neither a parameter nor a created resource")

    def _getatt(self, logical_id: str, attribute: str) -> Any:
        if logical_id in self.state.skipped:
            raise Unavailable(f"{logical_id} was not created: {self.state.skipped[logical_id]}")
        attributes = self.state.attributes.get(logical_id)
        if attributes is None:
            raise DeployError(f"Fn::GetAtt {logical_id}.{attribute}: no such resource (yet)")
        if attribute not in attributes:
            known = ", ".join(sorted(attributes)) or "none"
            raise DeployError(
                f"Fn::GetAtt {logical_id}.{attribute}: unknown attribute (known: {known})"
            )
        return attributes[attribute]

    # -- ordering ---------------------------------------------------------------------------

    def order(self) -> list[str]:
        graph: dict[str, set[str]] = {}
        for logical_id, resource in self.resources.items():
            depends = resource.get("DependsOn", [])
            depends = [depends] if isinstance(depends, str) else list(depends)
            refs = set(references(resource.get("Properties", {}))) | set(depends)
            graph[logical_id] = {ref for ref in refs if ref in self.resources}
        ordered: list[str] = []
        state: dict[str, str] = {}

        def visit(node: str, trail: tuple[str, ...]) -> None:
            if state.get(node) == "done":
                return
            if state.get(node) == "visiting":
                raise DeployError(f"circular dependency: {' -> '.join((*trail, node))}")
            state[node] = "visiting"
            for dependency in sorted(graph[node]):
                visit(dependency, (*trail, node))
            state[node] = "done"
            ordered.append(node)

        for node in self.resources:
            visit(node, ())
        return ordered

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> Deployment:
        state = self.state
        state.say(f"deploying stack {state.stack_name} in {state.region}")
        # As CloudFormation: a parameter combination the template's Rules refuse creates nothing.
        check_rules(self.template.get("Rules", {}), self.parameters)
        for logical_id in self.order():
            resource = self.resources[logical_id]
            condition = resource.get("Condition")
            if condition and not self.resolver.condition(condition):
                state.skipped[logical_id] = f"condition {condition} is false"
                continue
            self._create(logical_id, resource)
        outputs = self._outputs()
        apis = apigateway.apis(state)
        admin = self._admin_username()
        return Deployment(
            stack_name=state.stack_name,
            stack_id=state.stack_id,
            region=state.region,
            account_id=state.account_id,
            endpoint_url=state.endpoint_url,
            outputs=outputs,
            functions=dict(state.functions),
            apis=apis,
            admin_username=admin,
            admin_password=state.user_passwords.get(admin) if admin else None,
            user_passwords=dict(state.user_passwords),
            physical_ids=dict(state.physical_ids),
            attributes=dict(state.attributes),
            custom_resources=dict(state.custom_data),
            skipped=dict(state.skipped),
            topic_rules=list(state.topic_rules),
            permissions=list(state.permissions),
        )

    def _create(self, logical_id: str, resource: dict[str, Any]) -> None:
        kind = resource.get("Type", "")
        creator = CREATORS.get(kind)
        if kind.startswith("Custom::") or kind == "AWS::CloudFormation::CustomResource":
            creator = custom.run_custom_resource
        try:
            properties = self.resolver.resolve(resource.get("Properties", {}))
        except Unavailable as exc:
            self.state.skipped[logical_id] = str(exc)
            self.state.say(f"  skip   {logical_id} ({exc})")
            return
        if creator is None:
            self.state.placeholder(logical_id, kind)
            return
        try:
            creator(self.state, logical_id, kind, properties)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise DeployError(
                f"{logical_id} ({kind}): {error.get('Code')}: {error.get('Message')}"
            ) from exc

    def _outputs(self) -> dict[str, str]:
        outputs: dict[str, str] = {}
        for name, spec in self.template.get("Outputs", {}).items():
            condition = spec.get("Condition")
            if condition and not self.resolver.condition(condition):
                continue
            try:
                outputs[name] = self.resolver.resolve_str(spec["Value"])
            except Unavailable as exc:
                self.state.say(f"  output {name} unavailable: {exc}")
        return outputs

    def _admin_username(self) -> str | None:
        for group, username in self.state.group_members:
            if group == "Administrators":
                return username
        return next(iter(self.state.user_passwords), None)


def _check_parameter(name: str, spec: dict[str, Any], raw: str) -> None:
    allowed = spec.get("AllowedValues")
    if allowed and raw not in [str(v) for v in allowed]:
        raise DeployError(f"parameter {name}={raw!r} is not one of {allowed}")
    pattern = spec.get("AllowedPattern")
    if pattern:
        import re

        if not re.fullmatch(pattern, raw):
            raise DeployError(f"parameter {name}={raw!r} does not match {pattern}")
    if "MinLength" in spec and len(raw) < int(spec["MinLength"]):
        raise DeployError(f"parameter {name} is shorter than {spec['MinLength']}")
    if "MaxLength" in spec and len(raw) > int(spec["MaxLength"]):
        raise DeployError(f"parameter {name} is longer than {spec['MaxLength']}")
    if spec.get("Type") == "Number":
        try:
            number = float(raw)
        except ValueError:
            raise DeployError(f"parameter {name}={raw!r} is not a number") from None
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise DeployError(f"parameter {name}={raw} is below {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise DeployError(f"parameter {name}={raw} is above {spec['MaxValue']}")


def deploy(
    template_path: str | Path,
    parameters: dict[str, str],
    *,
    endpoint_url: str | None = None,
    region: str = "us-east-1",
    stack_name: str = DEFAULT_STACK_NAME,
    run_custom_resources: bool = True,
    progress: Progress | None = None,
    invoker: Invoker | None = None,
) -> Deployment:
    """Create the template's resources on moto and return what was made.

    ``endpoint_url=None`` talks to whatever boto3 resolves (moto's ``mock_aws`` in tests);
    otherwise to a moto server at that URL. Custom resources run their real handlers through
    ``invoker``; by default in-process (``InProcessInvoker``, what ``mock_aws`` needs), with
    AWS_ENDPOINT_URL set to ``endpoint_url`` when there is one.
    """
    return _Deployer(
        Path(template_path),
        dict(parameters),
        endpoint_url=endpoint_url,
        region=region,
        stack_name=stack_name,
        run_custom_resources=run_custom_resources,
        progress=progress,
        invoker=invoker or InProcessInvoker(region=region, endpoint_url=endpoint_url),
    ).run()
