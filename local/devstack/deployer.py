"""Deploy ``template.yaml`` onto moto: the offline stand-in for ``sam deploy``.

The template goes through the SAM translator (as it does in CloudFormation), intrinsics are
resolved here, and each resource is created in dependency order with boto3 against either
moto's in-process mock (``mock_aws``, endpoint_url=None) or a moto server (endpoint_url).

What is created where:
- DynamoDB tables, Cognito pools/clients/groups/users, ACM PCA CAs and certificates, IoT
  policies and thing groups, log groups: created with boto3, as CloudFormation would.
- Lambda functions: recorded (handler, code directory, resolved environment, timeout,
  reserved concurrency) and run by an ``Invoker`` (devstack.runtime): worker processes for the
  offline stack, in-process under ``mock_aws``; nothing is created in moto.
- IAM roles, Lambda permissions, API Gateway resources: given physical IDs but not created; the
  API's routes, authorizers and models are kept for the local gateway.
- Custom resources: the real handler runs through the invoker with a Create event
  (custom_resource.py).
"""

from __future__ import annotations

import json
import secrets
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from devstack.custom_resource import run_create
from devstack.errors import DeployError
from devstack.gateway_responses import GatewayResponses
from devstack.gateway_responses import parse as parse_gateway_responses
from devstack.intrinsics import NO_VALUE, Resolver, Unavailable, references
from devstack.runtime import FunctionSpec, InProcessInvoker, Invoker
from devstack.template import expand

__all__ = [
    "ApiSpec",
    "CognitoAuthorizer",
    "Deployment",
    "FunctionSpec",
    "Route",
    "deploy",
]

Progress = Callable[[str], None]

DEFAULT_STACK_NAME = "devstack"
_URL_SUFFIX = "amazonaws.com"
_ALNUM = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class CognitoAuthorizer:
    """A COGNITO_USER_POOLS authorizer: which pools (and their app clients) it trusts."""

    name: str
    header: str
    user_pool_ids: tuple[str, ...]
    client_ids: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    """One method of the REST API, as API Gateway sees it before the integration."""

    path: str  # resource path as in the API definition, e.g. /certificate or /devices/{dsn}
    method: str  # upper case, or ANY
    function: str  # logical ID of the Lambda proxy integration target
    authorizer: CognitoAuthorizer | None
    model_name: str | None = None
    schema: dict[str, Any] | None = None
    validate_body: bool = False
    # the content types the body model is mapped to; API Gateway validates only those
    body_content_types: tuple[str, ...] = ("application/json",)


@dataclass(frozen=True)
class ApiSpec:
    logical_id: str
    api_id: str
    stage: str
    routes: tuple[Route, ...]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    gateway_responses: GatewayResponses = field(default_factory=GatewayResponses)


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

    @property
    def api(self) -> ApiSpec:
        """The template's (single) REST API."""
        if len(self.apis) != 1:
            raise DeployError(f"expected one REST API in the template, found {sorted(self.apis)}")
        return next(iter(self.apis.values()))


def _random_suffix(length: int = 13) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def _generated_name(stack: str, logical_id: str, limit: int = 128) -> str:
    """A physical name the way CloudFormation makes one: <stack>-<LogicalId>-<RANDOM>."""
    suffix = _random_suffix()
    room = limit - len(suffix) - 2
    prefix = f"{stack}-{logical_id}"[:room]
    return f"{prefix}-{suffix}"


def generate_password(min_length: int = 12) -> str:
    """A password that satisfies any Cognito password policy up to ``min_length``."""
    length = max(20, min_length)
    symbols = "!#%+-=_"
    pools = [string.ascii_uppercase, string.ascii_lowercase, string.digits, symbols]
    chars = [secrets.choice(pool) for pool in pools]
    everything = "".join(pools)
    chars += [secrets.choice(everything) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def _filter_params(client: Any, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """Keep only what the API operation accepts (CloudFormation has a few extra knobs)."""
    shape = client.meta.service_model.operation_model(operation).input_shape
    return {key: value for key, value in params.items() if key in shape.members}


class _Deployer:
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
        self.invoker = invoker
        self.endpoint_url = endpoint_url
        self.region = region
        self.stack_name = stack_name
        self.run_custom_resources = run_custom_resources
        self._progress = progress
        self._clients: dict[str, Any] = {}
        self.account_id = self._client("sts").get_caller_identity()["Account"]
        self.stack_id = (
            f"arn:aws:cloudformation:{region}:{self.account_id}:stack/{stack_name}/{uuid.uuid4()}"
        )
        expanded = expand(template_path, parameters, region)
        self.template = expanded.template
        self.code_uris = expanded.code_uris
        self.parameters = self._parameter_values(parameters)
        self.resources: dict[str, dict[str, Any]] = self.template["Resources"]
        self.physical_ids: dict[str, str] = {}
        self.attributes: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, str] = {}
        self.functions: dict[str, FunctionSpec] = {}
        self.user_passwords: dict[str, str] = {}
        self.users_by_logical_id: dict[str, str] = {}
        self.group_members: list[tuple[str, str]] = []  # (group name, username)
        self.custom_data: dict[str, dict[str, Any]] = {}
        self.resolver = Resolver(
            ref=self._ref, getatt=self._getatt, conditions=self.template.get("Conditions", {})
        )

    # -- plumbing ---------------------------------------------------------------------------

    def say(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service, region_name=self.region, endpoint_url=self.endpoint_url
            )
        return self._clients[service]

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
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": _URL_SUFFIX,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": self.stack_id,
            "AWS::NotificationARNs": [],
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.skipped:
            raise Unavailable(f"{name} was not created: {self.skipped[name]}")
        if name in self.physical_ids:
            return self.physical_ids[name]
        raise DeployError(f"Ref to {name}, which is neither a parameter nor a created resource")

    def _getatt(self, logical_id: str, attribute: str) -> Any:
        if logical_id in self.skipped:
            raise Unavailable(f"{logical_id} was not created: {self.skipped[logical_id]}")
        attributes = self.attributes.get(logical_id)
        if attributes is None:
            raise DeployError(f"Fn::GetAtt {logical_id}.{attribute}: no such resource (yet)")
        if attribute not in attributes:
            known = ", ".join(sorted(attributes)) or "none"
            raise DeployError(
                f"Fn::GetAtt {logical_id}.{attribute}: unknown attribute (known: {known})"
            )
        return attributes[attribute]

    def _arn(self, service: str, resource: str, *, region: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{self.account_id}:{resource}"

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
        self.say(f"deploying stack {self.stack_name} in {self.region}")
        for logical_id in self.order():
            resource = self.resources[logical_id]
            condition = resource.get("Condition")
            if condition and not self.resolver.condition(condition):
                self.skipped[logical_id] = f"condition {condition} is false"
                continue
            self._create(logical_id, resource)
        outputs = self._outputs()
        apis = self._apis()
        admin = self._admin_username()
        return Deployment(
            stack_name=self.stack_name,
            stack_id=self.stack_id,
            region=self.region,
            account_id=self.account_id,
            endpoint_url=self.endpoint_url,
            outputs=outputs,
            functions=dict(self.functions),
            apis=apis,
            admin_username=admin,
            admin_password=self.user_passwords.get(admin) if admin else None,
            user_passwords=dict(self.user_passwords),
            physical_ids=dict(self.physical_ids),
            attributes=dict(self.attributes),
            custom_resources=dict(self.custom_data),
            skipped=dict(self.skipped),
        )

    def _create(self, logical_id: str, resource: dict[str, Any]) -> None:
        kind = resource.get("Type", "")
        creator = _CREATORS.get(kind)
        if kind.startswith("Custom::") or kind == "AWS::CloudFormation::CustomResource":
            creator = _Deployer._custom_resource
        try:
            properties = self.resolver.resolve(resource.get("Properties", {}))
        except Unavailable as exc:
            self.skipped[logical_id] = str(exc)
            self.say(f"  skip   {logical_id} ({exc})")
            return
        if creator is None:
            self._placeholder(logical_id, kind)
            return
        try:
            creator(self, logical_id, kind, properties)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise DeployError(
                f"{logical_id} ({kind}): {error.get('Code')}: {error.get('Message')}"
            ) from exc

    def _done(self, logical_id: str, kind: str, physical_id: str, **attributes: Any) -> None:
        self.physical_ids[logical_id] = physical_id
        self.attributes[logical_id] = attributes
        self.say(f"  create {logical_id} ({kind}): {physical_id}")

    def _placeholder(self, logical_id: str, kind: str, **attributes: Any) -> None:
        """A resource with no offline counterpart: it gets a name and an ARN, nothing else."""
        service = kind.split("::")[1].lower() if kind.count("::") >= 2 else "unknown"
        name = _generated_name(self.stack_name, logical_id, 64)
        self.physical_ids[logical_id] = name
        self.attributes[logical_id] = {"Arn": self._arn(service, name), **attributes}
        self.say(f"  record {logical_id} ({kind}), not created offline")

    def _outputs(self) -> dict[str, str]:
        outputs: dict[str, str] = {}
        for name, spec in self.template.get("Outputs", {}).items():
            condition = spec.get("Condition")
            if condition and not self.resolver.condition(condition):
                continue
            try:
                outputs[name] = self.resolver.resolve_str(spec["Value"])
            except Unavailable as exc:
                self.say(f"  output {name} unavailable: {exc}")
        return outputs

    def _admin_username(self) -> str | None:
        for group, username in self.group_members:
            if group == "Administrators":
                return username
        return next(iter(self.user_passwords), None)

    # -- resources --------------------------------------------------------------------------

    def _dynamodb_table(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        client = self._client("dynamodb")
        name = props.get("TableName") or _generated_name(self.stack_name, logical_id, 255)
        params: dict[str, Any] = {
            key: props[key]
            for key in (
                "AttributeDefinitions",
                "KeySchema",
                "BillingMode",
                "ProvisionedThroughput",
                "GlobalSecondaryIndexes",
                "LocalSecondaryIndexes",
                "TableClass",
                "DeletionProtectionEnabled",
                "Tags",
            )
            if key in props
        }
        _numbers(params.get("ProvisionedThroughput"))
        for index in params.get("GlobalSecondaryIndexes", []):
            _numbers(index.get("ProvisionedThroughput"))
        sse = props.get("SSESpecification")
        if sse:
            params["SSESpecification"] = {
                "Enabled": _flag(sse.get("SSEEnabled", False)),
                **{k: sse[k] for k in ("SSEType", "KMSMasterKeyId") if k in sse},
            }
        stream = props.get("StreamSpecification")
        if stream:
            params["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": stream["StreamViewType"],
            }
        client.create_table(TableName=name, **params)
        client.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
        pitr = props.get("PointInTimeRecoverySpecification")
        if pitr:
            client.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={
                    "PointInTimeRecoveryEnabled": _flag(
                        pitr.get("PointInTimeRecoveryEnabled", False)
                    )
                },
            )
        ttl = props.get("TimeToLiveSpecification")
        if ttl and _flag(ttl.get("Enabled", False)):
            client.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
        table = client.describe_table(TableName=name)["Table"]
        self._done(
            logical_id,
            kind,
            name,
            Arn=table["TableArn"],
            StreamArn=table.get("LatestStreamArn", ""),
        )

    def _user_pool(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        client = self._client("cognito-idp")
        params = dict(props)
        params["PoolName"] = params.pop("UserPoolName", None) or _generated_name(
            self.stack_name, logical_id
        )
        admin_config = params.get("AdminCreateUserConfig")
        if admin_config:
            admin_config.pop("UnusedAccountValidityDays", None)  # CloudFormation-only, legacy
        _numbers_deep(params.get("Policies"))
        pool = client.create_user_pool(**_filter_params(client, "CreateUserPool", params))
        pool_id = pool["UserPool"]["Id"]
        provider = f"cognito-idp.{self.region}.{_URL_SUFFIX}/{pool_id}"
        self._done(
            logical_id,
            kind,
            pool_id,
            Arn=pool["UserPool"]["Arn"],
            ProviderName=provider,
            ProviderURL=f"https://{provider}",
            UserPoolId=pool_id,
        )
        self.attributes[logical_id]["_MinimumLength"] = int(
            (props.get("Policies") or {}).get("PasswordPolicy", {}).get("MinimumLength", 8)
        )

    def _user_pool_client(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        client = self._client("cognito-idp")
        params = dict(props)
        params.setdefault("ClientName", _generated_name(self.stack_name, logical_id))
        for key in ("GenerateSecret", "AllowedOAuthFlowsUserPoolClient"):
            if key in params:
                params[key] = _flag(params[key])
        for key in ("RefreshTokenValidity", "AccessTokenValidity", "IdTokenValidity"):
            if key in params:
                params[key] = int(params[key])
        created = client.create_user_pool_client(
            **_filter_params(client, "CreateUserPoolClient", params)
        )["UserPoolClient"]
        self._done(
            logical_id,
            kind,
            created["ClientId"],
            ClientId=created["ClientId"],
            ClientSecret=created.get("ClientSecret", ""),
            Name=created["ClientName"],
            _UserPoolId=props["UserPoolId"],
        )

    def _user_pool_group(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        client = self._client("cognito-idp")
        params = dict(props)
        params.setdefault("GroupName", _generated_name(self.stack_name, logical_id))
        if "Precedence" in params:
            params["Precedence"] = int(params["Precedence"])
        client.create_group(**_filter_params(client, "CreateGroup", params))
        self._done(logical_id, kind, params["GroupName"])

    def _user_pool_user(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        client = self._client("cognito-idp")
        params = dict(props)
        username = params.get("Username") or str(uuid.uuid4())
        params["Username"] = username
        if "ForceAliasCreation" in params:
            params["ForceAliasCreation"] = _flag(params["ForceAliasCreation"])
        client.admin_create_user(**_filter_params(client, "AdminCreateUser", params))
        # CloudFormation would e-mail a temporary password; offline there is no mail, so the
        # user gets a generated permanent password that the stack prints and records.
        pool_logical = self._logical_id_of(props["UserPoolId"])
        min_length = self.attributes.get(pool_logical or "", {}).get("_MinimumLength", 8)
        password = generate_password(min_length)
        client.admin_set_user_password(
            UserPoolId=props["UserPoolId"], Username=username, Password=password, Permanent=True
        )
        self.user_passwords[username] = password
        self.users_by_logical_id[logical_id] = username
        self._done(logical_id, kind, username)

    def _user_to_group(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        client = self._client("cognito-idp")
        client.admin_add_user_to_group(
            UserPoolId=props["UserPoolId"], Username=props["Username"], GroupName=props["GroupName"]
        )
        self.group_members.append((props["GroupName"], props["Username"]))
        self._done(logical_id, kind, f"{props['GroupName']}/{props['Username']}")

    def _certificate_authority(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        client = self._client("acm-pca")
        configuration = {
            key: props[key]
            for key in ("KeyAlgorithm", "SigningAlgorithm", "Subject", "CsrExtensions")
            if key in props
        }
        params: dict[str, Any] = {
            "CertificateAuthorityConfiguration": configuration,
            "CertificateAuthorityType": props["Type"],
            "IdempotencyToken": logical_id[:36],
        }
        for key in ("RevocationConfiguration", "KeyStorageSecurityStandard", "UsageMode", "Tags"):
            if key in props:
                params[key] = props[key]
        revocation = params.get("RevocationConfiguration", {})
        for section in ("OcspConfiguration", "CrlConfiguration"):
            if section in revocation and "Enabled" in revocation[section]:
                revocation[section]["Enabled"] = _flag(revocation[section]["Enabled"])
        crl = revocation.get("CrlConfiguration", {})
        if "ExpirationInDays" in crl:
            crl["ExpirationInDays"] = int(crl["ExpirationInDays"])
        arn = client.create_certificate_authority(**params)["CertificateAuthorityArn"]
        csr = client.get_certificate_authority_csr(CertificateAuthorityArn=arn)["Csr"]
        self._done(logical_id, kind, arn, Arn=arn, CertificateSigningRequest=csr)

    def _pca_certificate(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        client = self._client("acm-pca")
        validity = dict(props["Validity"])
        validity["Value"] = int(validity["Value"])
        params: dict[str, Any] = {
            "CertificateAuthorityArn": props["CertificateAuthorityArn"],
            "Csr": props["CertificateSigningRequest"].encode(),
            "SigningAlgorithm": props["SigningAlgorithm"],
            "Validity": validity,
            "IdempotencyToken": logical_id[:36],
        }
        for key in ("TemplateArn", "ApiPassthrough", "ValidityNotBefore"):
            if key in props:
                params[key] = props[key]
        arn = client.issue_certificate(**params)["CertificateArn"]
        # moto issues synchronously; the waiter also covers a real asynchronous issuance.
        client.get_waiter("certificate_issued").wait(
            CertificateAuthorityArn=props["CertificateAuthorityArn"],
            CertificateArn=arn,
            WaiterConfig={"Delay": 1, "MaxAttempts": 30},
        )
        certificate = client.get_certificate(
            CertificateAuthorityArn=props["CertificateAuthorityArn"], CertificateArn=arn
        )
        self._done(logical_id, kind, arn, Arn=arn, Certificate=certificate["Certificate"])

    def _ca_activation(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        client = self._client("acm-pca")
        ca_arn = props["CertificateAuthorityArn"]
        params: dict[str, Any] = {
            "CertificateAuthorityArn": ca_arn,
            "Certificate": props["Certificate"].encode(),
        }
        if props.get("CertificateChain"):
            params["CertificateChain"] = props["CertificateChain"].encode()
        client.import_certificate_authority_certificate(**params)
        if props.get("Status", "ACTIVE") != "ACTIVE":
            client.update_certificate_authority(
                CertificateAuthorityArn=ca_arn, Status=props["Status"]
            )
        chain = props["Certificate"] + (props.get("CertificateChain") or "")
        self._done(logical_id, kind, ca_arn, CompleteCertificateChain=chain)

    def _iot_thing_group(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        client = self._client("iot")
        name = props.get("ThingGroupName") or _generated_name(self.stack_name, logical_id)
        params: dict[str, Any] = {"thingGroupName": name}
        group_props = props.get("ThingGroupProperties")
        if group_props:
            params["thingGroupProperties"] = {
                "thingGroupDescription": group_props.get("ThingGroupDescription", ""),
                "attributePayload": {
                    "attributes": group_props.get("AttributePayload", {}).get("Attributes", {})
                },
            }
        if props.get("Tags"):
            params["tags"] = [{"Key": t["Key"], "Value": t["Value"]} for t in props["Tags"]]
        try:
            created = client.create_thing_group(**params)
            arn, group_id = created["thingGroupArn"], created["thingGroupId"]
        except ClientError as exc:
            # moto gap: a repeated CreateThingGroup raises where AWS succeeds for an identical
            # configuration (a redeploy onto the same server); use the existing group.
            if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                raise
            described = client.describe_thing_group(thingGroupName=name)
            arn, group_id = described["thingGroupArn"], described["thingGroupId"]
        self._done(logical_id, kind, name, Arn=arn, Id=group_id)

    def _iot_policy(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        client = self._client("iot")
        name = props.get("PolicyName") or _generated_name(self.stack_name, logical_id)
        document = props["PolicyDocument"]
        if not isinstance(document, str):
            document = json.dumps(document)
        created = client.create_policy(policyName=name, policyDocument=document)
        self._done(logical_id, kind, name, Arn=created["policyArn"], Id=name)

    def _log_group(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        client = self._client("logs")
        name = props.get("LogGroupName") or _generated_name(self.stack_name, logical_id, 512)
        try:
            client.create_log_group(logGroupName=name)
            if "RetentionInDays" in props:
                client.put_retention_policy(
                    logGroupName=name, retentionInDays=int(props["RetentionInDays"])
                )
        except ClientError as exc:  # a log group is not worth stopping the local stack for
            self.say(f"  note   {logical_id}: log group not created ({exc})")
        self._done(logical_id, kind, name, Arn=self._arn("logs", f"log-group:{name}:*"))

    def _lambda_function(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        name = props.get("FunctionName") or _generated_name(self.stack_name, logical_id, 64)
        arn = self._arn("lambda", f"function:{name}")
        code_uri = self.code_uris.get(logical_id)
        if code_uri is None:
            raise DeployError(f"{logical_id}: only AWS::Serverless::Function code runs offline")
        variables = (props.get("Environment") or {}).get("Variables") or {}
        self.functions[logical_id] = FunctionSpec(
            logical_id=logical_id,
            name=name,
            arn=arn,
            handler=props["Handler"],
            code_uri=code_uri,
            environment={key: _as_env(value) for key, value in variables.items()},
            timeout=int(props.get("Timeout", 3)),
            memory_size=int(props.get("MemorySize", 128)),
            reserved_concurrency=(
                int(props["ReservedConcurrentExecutions"])
                if props.get("ReservedConcurrentExecutions") is not None
                else None
            ),
        )
        self.physical_ids[logical_id] = name
        self.attributes[logical_id] = {"Arn": arn}
        self.say(f"  record {logical_id} (Lambda): {props['Handler']}")

    def _iam_role(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        name = props.get("RoleName") or _generated_name(self.stack_name, logical_id, 64)
        self.physical_ids[logical_id] = name
        self.attributes[logical_id] = {
            "Arn": self._arn("iam", f"role/{name}", region=False),
            "RoleId": "AROA" + _random_suffix(17),
        }
        self.say(f"  record {logical_id} ({kind}), IAM is not evaluated offline")

    def _rest_api(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        api_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(10))
        self.physical_ids[logical_id] = api_id
        self.attributes[logical_id] = {"RootResourceId": _random_suffix(10).lower(), "_Body": props}
        self.say(f"  record {logical_id} ({kind}), served by the local gateway")

    def _stage(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        self.physical_ids[logical_id] = props["StageName"]
        self.attributes[logical_id] = {"_RestApiId": props["RestApiId"]}
        self.say(f"  record {logical_id} (stage {props['StageName']})")

    def _custom_resource(self, logical_id: str, kind: str, props: dict[str, Any]) -> None:
        token = props.get("ServiceToken")
        function = next((f for f in self.functions.values() if f.arn == token), None)
        if function is None:
            raise DeployError(
                f"{logical_id}: ServiceToken {token!r} is not a Lambda function of this template"
            )
        if not self.run_custom_resources:
            self.skipped[logical_id] = "custom resources disabled (run_custom_resources=False)"
            self.say(f"  skip   {logical_id} ({kind}): custom resources disabled")
            return
        self.say(f"  invoke {logical_id} ({kind}) -> {function.handler}")
        result = run_create(
            function,
            logical_id=logical_id,
            resource_type=kind,
            properties=_stringify(props),
            stack_id=self.stack_id,
            invoker=self.invoker,
        )
        self.custom_data[logical_id] = result.data
        self._done(logical_id, kind, result.physical_id, **result.data)

    def _logical_id_of(self, physical_id: str) -> str | None:
        return next((k for k, v in self.physical_ids.items() if v == physical_id), None)

    # -- the API for the gateway ------------------------------------------------------------

    def _apis(self) -> dict[str, ApiSpec]:
        apis: dict[str, ApiSpec] = {}
        stages = {
            attrs["_RestApiId"]: self.physical_ids[logical_id]
            for logical_id, attrs in self.attributes.items()
            if "_RestApiId" in attrs
        }
        function_by_arn = {spec.arn: logical_id for logical_id, spec in self.functions.items()}
        for logical_id, attrs in self.attributes.items():
            if "_Body" not in attrs:
                continue
            body = attrs["_Body"].get("Body")
            if not isinstance(body, dict):
                raise DeployError(f"{logical_id}: only inline API definitions (Body) run offline")
            api_id = self.physical_ids[logical_id]
            apis[logical_id] = _api_spec(
                logical_id,
                api_id,
                stages.get(api_id, "Prod"),
                body,
                function_by_arn,
                self._authorizer_clients(),
            )
        return apis

    def _authorizer_clients(self) -> dict[str, list[str]]:
        """User pool ID -> IDs of its app clients created by the template."""
        by_pool: dict[str, list[str]] = {}
        for attrs in self.attributes.values():
            if "_UserPoolId" in attrs:
                by_pool.setdefault(attrs["_UserPoolId"], []).append(attrs["ClientId"])
        return by_pool


def _api_spec(
    logical_id: str,
    api_id: str,
    stage: str,
    body: dict[str, Any],
    function_by_arn: dict[str, str],
    clients_by_pool: dict[str, list[str]],
) -> ApiSpec:
    # SAM writes Swagger 2.0 by default and OpenAPI 3 when OpenApiVersion is set.
    components = body.get("components", {})
    models: dict[str, dict[str, Any]] = body.get("definitions") or components.get("schemas", {})
    schemes = body.get("securityDefinitions") or components.get("securitySchemes", {})
    authorizers: dict[str, CognitoAuthorizer] = {}
    for name, definition in schemes.items():
        config = definition.get("x-amazon-apigateway-authorizer", {})
        if config.get("type") != "cognito_user_pools":
            raise DeployError(f"{logical_id}: authorizer {name} is not Cognito; not emulated")
        pools = tuple(arn.rsplit("/", 1)[-1] for arn in config.get("providerARNs", []))
        authorizers[name] = CognitoAuthorizer(
            name=name,
            header=definition.get("name", "Authorization"),
            user_pool_ids=pools,
            client_ids=tuple(c for pool in pools for c in clients_by_pool.get(pool, [])),
        )
    validators = body.get("x-amazon-apigateway-request-validators", {})
    default_validator = body.get("x-amazon-apigateway-request-validator")
    routes: list[Route] = []
    for path, methods in body.get("paths", {}).items():
        for method, operation in methods.items():
            integration = operation.get("x-amazon-apigateway-integration", {})
            if integration.get("type") != "aws_proxy":
                continue
            uri = integration.get("uri", "")
            function = next((lid for arn, lid in function_by_arn.items() if arn in uri), None)
            if function is None:
                raise DeployError(f"{logical_id}: {method} {path} targets no template function")
            security = operation.get("security", body.get("security", []))
            names = [name for requirement in security for name in requirement]
            authorizer = next((authorizers[n] for n in names if n in authorizers), None)
            model_name, content_types = _body_model(operation, body)
            schema = models.get(model_name) if model_name else None
            validator = operation.get("x-amazon-apigateway-request-validator", default_validator)
            validate_body = bool(validators.get(validator, {}).get("validateRequestBody"))
            routes.append(
                Route(
                    path=path,
                    method="ANY" if method == "x-amazon-apigateway-any-method" else method.upper(),
                    function=function,
                    authorizer=authorizer,
                    model_name=model_name,
                    schema=schema,
                    validate_body=validate_body and schema is not None,
                    body_content_types=content_types,
                )
            )
    return ApiSpec(
        logical_id=logical_id,
        api_id=api_id,
        stage=stage,
        routes=tuple(routes),
        models=models,
        gateway_responses=parse_gateway_responses(body),
    )


def _body_model(
    operation: dict[str, Any], definition: dict[str, Any]
) -> tuple[str | None, tuple[str, ...]]:
    """The model an operation's request body refers to, if any, and its content types.

    Swagger 2.0: the body parameter's model, for the operation's (else the API's) ``consumes``,
    which API Gateway takes as application/json when absent. OpenAPI 3: the requestBody's
    content types that carry a model.
    """
    for parameter in operation.get("parameters", []):
        ref = parameter.get("schema", {}).get("$ref", "") if parameter.get("in") == "body" else ""
        if ref:
            consumes = operation.get("consumes") or definition.get("consumes")
            return ref.rsplit("/", 1)[-1], tuple(consumes or ("application/json",))
    content = operation.get("requestBody", {}).get("content", {})
    refs = {kind: media.get("schema", {}).get("$ref", "") for kind, media in content.items()}
    mapped = tuple(kind for kind, ref in refs.items() if ref)
    if not mapped:
        return None, ()
    return refs[mapped[0]].rsplit("/", 1)[-1], mapped


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


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _numbers(throughput: dict[str, Any] | None) -> None:
    if throughput:
        for key, value in throughput.items():
            throughput[key] = int(value)


def _numbers_deep(value: Any) -> None:
    """CloudFormation passes numbers as strings; boto3 wants ints and bools."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and item.isdigit():
                value[key] = int(item)
            elif isinstance(item, str) and item.lower() in ("true", "false"):
                value[key] = item.lower() == "true"
            else:
                _numbers_deep(item)


def _as_env(value: Any) -> str:
    if value is NO_VALUE:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _stringify(value: Any) -> Any:
    """CloudFormation hands custom resources every scalar property as a string."""
    if isinstance(value, dict):
        return {key: _stringify(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_stringify(item) for item in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


_CREATORS: dict[str, Callable[[_Deployer, str, str, dict[str, Any]], None]] = {
    "AWS::DynamoDB::Table": _Deployer._dynamodb_table,
    "AWS::Cognito::UserPool": _Deployer._user_pool,
    "AWS::Cognito::UserPoolClient": _Deployer._user_pool_client,
    "AWS::Cognito::UserPoolGroup": _Deployer._user_pool_group,
    "AWS::Cognito::UserPoolUser": _Deployer._user_pool_user,
    "AWS::Cognito::UserPoolUserToGroupAttachment": _Deployer._user_to_group,
    "AWS::ACMPCA::CertificateAuthority": _Deployer._certificate_authority,
    "AWS::ACMPCA::Certificate": _Deployer._pca_certificate,
    "AWS::ACMPCA::CertificateAuthorityActivation": _Deployer._ca_activation,
    "AWS::IoT::ThingGroup": _Deployer._iot_thing_group,
    "AWS::IoT::Policy": _Deployer._iot_policy,
    "AWS::Logs::LogGroup": _Deployer._log_group,
    "AWS::Lambda::Function": _Deployer._lambda_function,
    "AWS::IAM::Role": _Deployer._iam_role,
    "AWS::ApiGateway::RestApi": _Deployer._rest_api,
    "AWS::ApiGateway::Stage": _Deployer._stage,
}


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
