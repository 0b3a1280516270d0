"""What template.yaml promises: the contract's names, least privilege, limits AWS enforces.

The template is read with cfn-lint's decoder (it understands the short-form intrinsic tags),
so these tests see exactly what `cfn-lint` and `sam deploy` see.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint_file
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
CONFIG_PATH = ROOT / "provisioning_lambda" / "config.json"

API_GATEWAY_INTEGRATION_TIMEOUT_S = 29
IOT_POLICY_DOCUMENT_MAX_CHARS = 2048
THING_NAME_VARIABLE = "${iot:Connection.Thing.ThingName}"

CONTRACT_PARAMETERS = {
    "AdminEmail",
    "AdminUsername",
    "StageName",
    "ThingPrefix",
    "ThingGroupName",
    "DeviceCertValidityDays",
    "RenewalGraceHours",
    "RenewalMinIntervalSeconds",
    "RenewalReservedConcurrency",
    "DeviceKeyAlgorithm",
    "CaKeyAlgorithm",
    "CaValidityYears",
    "IssuingCaValidityYears",
    "CaCommonName",
    "IssuingCaCommonName",
    "CaOrganization",
    "CaOrganizationalUnit",
    "CaLocality",
    "CaState",
    "CaCountry",
    "CaCertificateMode",
    "DeviceSubjectOrganization",
    "DeviceSubjectOrganizationalUnit",
    "DeviceSubjectCountry",
    "LogRetentionDays",
    "ApiThrottleRateLimit",
    "ApiThrottleBurstLimit",
    "ApiAccessLogging",
    "CreateApiGatewayAccountRole",
    "IndexUpgradeStep",
    "ProvisioningReservedConcurrency",
    "CaUsageMode",
    "ExpiryWarningPercent",
    "ExpiryWatchSchedule",
    "RequireAttestation",
    "AppOrigin",
}
CONTRACT_RESOURCES = {
    "UserPool": "AWS::Cognito::UserPool",
    "UserPoolClient": "AWS::Cognito::UserPoolClient",
    "AdministratorsGroup": "AWS::Cognito::UserPoolGroup",
    "MembersGroup": "AWS::Cognito::UserPoolGroup",
    "AdminUser": "AWS::Cognito::UserPoolUser",
    "AdminUserInAdministrators": "AWS::Cognito::UserPoolUserToGroupAttachment",
    "DevicesTable": "AWS::DynamoDB::Table",
    "AuditTable": "AWS::DynamoDB::Table",
    "AllowlistTable": "AWS::DynamoDB::Table",
    "CertificateAuthority": "AWS::ACMPCA::CertificateAuthority",
    "CACertificate": "AWS::ACMPCA::Certificate",
    "CAActivation": "AWS::ACMPCA::CertificateAuthorityActivation",
    "IssuingCertificateAuthority": "AWS::ACMPCA::CertificateAuthority",
    "IssuingCACertificate": "AWS::ACMPCA::Certificate",
    "IssuingCAActivation": "AWS::ACMPCA::CertificateAuthorityActivation",
    "DevicePolicy": "AWS::IoT::Policy",
    "DeviceThingGroup": "AWS::IoT::ThingGroup",
    "ProvisioningApi": "AWS::Serverless::Api",
    "ProvisioningFunction": "AWS::Serverless::Function",
    "DeploymentFunction": "AWS::Serverless::Function",
    "SweeperFunction": "AWS::Serverless::Function",
    "ExpiryWatchFunction": "AWS::Serverless::Function",
    "ExpiryTopic": "AWS::SNS::Topic",
    "CaRegistration": "Custom::IoTCaRegistration",
    "ApiGatewayCloudWatchRole": "AWS::IAM::Role",
    "ApiGatewayAccount": "AWS::ApiGateway::Account",
}
CONTRACT_OUTPUTS = {
    "ApiUrl",
    "UserPoolId",
    "UserPoolClientId",
    "Region",
    "AppOrigin",
    "DevicesTableName",
    "AuditTableName",
    "AllowlistTableName",
    "CertificateAuthorityArn",
    "IssuingCertificateAuthorityArn",
    "DevicePolicyName",
    "ThingGroupName",
    "ThingPrefix",
    "IotCaCertificateId",
    "IotCaCertificateArn",
    "ProvisioningFunctionName",
    "DeploymentFunctionName",
    "SweeperFunctionName",
    "RenewalFunctionName",
    "ExpiryWatchFunctionName",
    "ExpiryTopicArn",
}
CONTRACT_PROVISIONING_ENV = {
    "DEVICES_TABLE",
    "AUDIT_TABLE",
    "CA_ARN",
    "CA_SIGNING_ALGORITHM",
    "CA_CERTIFICATE_MODE",
    "THING_PREFIX",
    "THING_GROUP",
    "IOT_POLICY_NAME",
    "DEVICE_CERT_VALIDITY_DAYS",
    "DEVICE_KEY_ALGORITHM",
    "SUBJECT_O",
    "SUBJECT_OU",
    "SUBJECT_C",
    "EXPIRY_WARNING_PERCENT",
    "ALLOWLIST_TABLE",
    "REQUIRE_ATTESTATION",
    "APP_ORIGIN",
}
POWERTOOLS_ENV = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}

# The longest values the pseudo parameters take, so a length check holds in every region.
WORST_CASE_PSEUDO = {
    "AWS::Partition": "aws-iso-b",
    "AWS::Region": "ap-southeast-5",
    "AWS::AccountId": "123456789012",
}


@cache
def _template() -> dict[str, Any]:
    template, matches = decode(str(TEMPLATE_PATH))
    assert not matches, [str(m) for m in matches]
    assert template is not None
    return template


def _resources() -> dict[str, Any]:
    resources: dict[str, Any] = _template()["Resources"]
    return resources


def _statements(function_id: str) -> list[dict[str, Any]]:
    policies = _resources()[function_id]["Properties"]["Policies"]
    return [statement for policy in policies for statement in policy["Statement"]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _resolve_sub(value: Any, extra: dict[str, str] | None = None) -> str:
    """Evaluate a plain string or a one-argument Fn::Sub with worst-case pseudo parameters."""
    if isinstance(value, str):
        return value
    text = value["Fn::Sub"]
    assert isinstance(text, str), "only the one-argument Fn::Sub form is expected here"
    names = {**WORST_CASE_PSEUDO, **(extra or {})}

    def replace(match: re.Match[str]) -> str:
        inner = match.group(1)
        if inner.startswith("!"):
            return "${" + inner[1:] + "}"  # escaped: a literal ${...} for IoT to evaluate
        return names[inner]

    return re.sub(r"\$\{([^}]+)\}", replace, text)


def _model_schema() -> dict[str, Any]:
    api = _resources()["ProvisioningApi"]["Properties"]
    schema: dict[str, Any] = api["Models"]["CertificateRequest"]
    return schema


# ---------------------------------------------------------------- lint and translation


def test_cfn_lint_reports_nothing() -> None:
    matches = lint_file(TEMPLATE_PATH)

    assert [str(m) for m in matches] == []


def test_sam_translator_turns_the_template_into_cloudformation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The offline deployer feeds this file to the SAM translator; it must accept it.
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    sam = copy.deepcopy(json.loads(json.dumps(_template())))
    for resource in sam["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            # `sam package` replaces the local CodeUri with an S3 location before the transform.
            resource["Properties"]["CodeUri"] = "s3://artifacts/code.zip"

    cfn = transform(sam, {"AdminEmail": "admin@example.com"}, NoManagedPolicies())

    types = [r["Type"] for r in cfn["Resources"].values()]
    assert not [t for t in types if t.startswith("AWS::Serverless::")]
    assert types.count("AWS::ApiGateway::Stage") == 1
    assert cfn["Resources"]["ProvisioningFunction"]["Type"] == "AWS::Lambda::Function"
    deployments = [
        r for r in cfn["Resources"].values() if r["Type"] == "AWS::ApiGateway::Deployment"
    ]
    # No stray stage called "Stage" created by the deployment itself.
    assert all("StageName" not in d["Properties"] for d in deployments)
    # Swagger 2 layout: the offline gateway reads the model and the authorizer from here.
    (api,) = [r for r in cfn["Resources"].values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    body = api["Properties"]["Body"]
    assert body["swagger"] == "2.0"
    assert "certificaterequest" in body["definitions"]
    assert body["securityDefinitions"]["CognitoAuthorizer"]["x-amazon-apigateway-authtype"] == (
        "cognito_user_pools"
    )


# ---------------------------------------------------------------- the contract's names


def test_anatomy_follows_sam_order() -> None:
    keys = [k for k in _template() if k != "AWSTemplateFormatVersion"]

    assert keys == [
        "Transform",
        "Description",
        "Globals",
        "Parameters",
        "Rules",
        "Conditions",
        "Resources",
        "Outputs",
    ]


def test_parameters_are_the_contract_and_admin_email_has_no_default() -> None:
    parameters = _template()["Parameters"]

    assert set(parameters) == CONTRACT_PARAMETERS
    assert "Default" not in parameters["AdminEmail"]
    assert all(p.get("Description") for p in parameters.values())


def test_contract_resources_exist_with_their_types() -> None:
    types = {name: r["Type"] for name, r in _resources().items()}

    assert {name: types.get(name) for name in CONTRACT_RESOURCES} == CONTRACT_RESOURCES


def test_every_contract_output_exists_and_is_described() -> None:
    outputs = _template()["Outputs"]

    assert set(outputs) == CONTRACT_OUTPUTS
    assert all(o.get("Description") for o in outputs.values())
    assert outputs["IotCaCertificateId"]["Value"] == {
        "Fn::GetAtt": ["CaRegistration", "CertificateId"]
    }
    assert outputs["IotCaCertificateArn"]["Value"] == {
        "Fn::GetAtt": ["CaRegistration", "CertificateArn"]
    }
    api_url = _resolve_sub(
        outputs["ApiUrl"]["Value"],
        {"ProvisioningApi": "abc123", "AWS::URLSuffix": "amazonaws.com", "StageName": "Beta"},
    )
    assert api_url == "https://abc123.execute-api.ap-southeast-5.amazonaws.com/Beta"


def test_provisioning_function_gets_exactly_the_contract_environment() -> None:
    function = _resources()["ProvisioningFunction"]["Properties"]
    env = function["Environment"]["Variables"]
    global_env = _template()["Globals"]["Function"]["Environment"]["Variables"]

    assert set(env) == CONTRACT_PROVISIONING_ENV
    assert set(global_env) >= POWERTOOLS_ENV
    assert env["CA_ARN"] == {"Ref": "IssuingCertificateAuthority"}
    assert env["IOT_POLICY_NAME"] == {"Ref": "DevicePolicy"}
    assert env["THING_GROUP"] == {"Ref": "DeviceThingGroup"}
    assert env["ALLOWLIST_TABLE"] == {"Ref": "AllowlistTable"}
    assert env["REQUIRE_ATTESTATION"] == {"Ref": "RequireAttestation"}
    assert function["Handler"] == "provisioning.handlers.api.lambda_handler"
    assert function["CodeUri"] == "provisioning_lambda/"


def test_post_certificate_route_is_validated_against_the_model() -> None:
    event = _resources()["ProvisioningFunction"]["Properties"]["Events"]["PostCertificate"]

    assert event["Type"] == "Api"
    assert event["Properties"]["Path"] == "/certificate"
    assert event["Properties"]["Method"].lower() == "post"
    assert event["Properties"]["RequestModel"] == {
        "Model": "CertificateRequest",
        "Required": True,
        "ValidateBody": True,
    }
    auth = _resources()["ProvisioningApi"]["Properties"]["Auth"]
    assert auth["DefaultAuthorizer"] == "CognitoAuthorizer"
    assert auth["Authorizers"]["CognitoAuthorizer"]["UserPoolArn"] == {
        "Fn::GetAtt": ["UserPool", "Arn"]
    }


def test_ca_signing_algorithm_follows_the_ca_key_algorithm() -> None:
    expected = {"Fn::If": ["IsEcCa", "SHA256WITHECDSA", "SHA256WITHRSA"]}
    env = _resources()["ProvisioningFunction"]["Properties"]["Environment"]["Variables"]

    assert _template()["Conditions"]["IsEcCa"] == {
        "Fn::Equals": [{"Ref": "CaKeyAlgorithm"}, "EC_prime256v1"]
    }
    assert _resources()["CertificateAuthority"]["Properties"]["SigningAlgorithm"] == expected
    assert _resources()["CACertificate"]["Properties"]["SigningAlgorithm"] == expected
    assert env["CA_SIGNING_ALGORITHM"] == expected


# ---------------------------------------------------------------- deploy-time ordering


def test_ca_registration_registers_the_issuing_ca_once_it_is_active() -> None:
    # AWS IoT must have the CA that signs device certificates registered, no other CA of the
    # hierarchy.
    registration = _resources()["CaRegistration"]

    assert "IssuingCAActivation" in _as_list(registration["DependsOn"])
    assert registration["Properties"] == {
        "ServiceToken": {"Fn::GetAtt": ["DeploymentFunction", "Arn"]},
        "CertificateAuthorityArn": {"Ref": "IssuingCertificateAuthority"},
        "CertificateMode": {"Ref": "CaCertificateMode"},
        "ForceDelete": "false",
        "ServiceTimeout": registration["Properties"]["ServiceTimeout"],
    }
    activation = _resources()["CAActivation"]["Properties"]
    assert activation["Status"] == "ACTIVE"
    assert activation["Certificate"] == {"Fn::GetAtt": ["CACertificate", "Certificate"]}


def test_root_ca_answers_ocsp() -> None:
    ca = _resources()["CertificateAuthority"]["Properties"]

    assert ca["Type"] == "ROOT"
    assert ca["RevocationConfiguration"]["OcspConfiguration"]["Enabled"] is True


def test_the_root_signs_the_issuing_ca_which_may_sign_only_end_entities() -> None:
    resources = _resources()
    issuing = resources["IssuingCertificateAuthority"]["Properties"]
    assert issuing["Type"] == "SUBORDINATE"
    assert issuing["RevocationConfiguration"]["OcspConfiguration"]["Enabled"] is True
    assert issuing["Subject"]["CommonName"] == {"Ref": "IssuingCaCommonName"}
    certificate = resources["IssuingCACertificate"]
    # signed by the root once the root is active, from the issuing CA's own key
    assert certificate["Properties"]["CertificateAuthorityArn"] == {"Ref": "CertificateAuthority"}
    assert certificate["DependsOn"] == "CAActivation"
    assert certificate["Properties"]["CertificateSigningRequest"] == {
        "Fn::GetAtt": ["IssuingCertificateAuthority", "CertificateSigningRequest"]
    }
    assert _resolve_sub(certificate["Properties"]["TemplateArn"]).endswith(
        ":acm-pca:::template/SubordinateCACertificate_PathLen0/V1"
    )
    assert certificate["Properties"]["Validity"] == {
        "Type": "YEARS",
        "Value": {"Ref": "IssuingCaValidityYears"},
    }
    activation = resources["IssuingCAActivation"]["Properties"]
    assert activation == {
        "CertificateAuthorityArn": {"Ref": "IssuingCertificateAuthority"},
        "Certificate": {"Fn::GetAtt": ["IssuingCACertificate", "Certificate"]},
        "CertificateChain": {"Fn::GetAtt": ["CAActivation", "CompleteCertificateChain"]},
        "Status": "ACTIVE",
    }


# ---------------------------------------------------------------- limits AWS enforces


def test_provisioning_function_answers_before_api_gateway_gives_up() -> None:
    globals_timeout = _template()["Globals"]["Function"]["Timeout"]
    function = _resources()["ProvisioningFunction"]["Properties"]

    assert function.get("Timeout", globals_timeout) < API_GATEWAY_INTEGRATION_TIMEOUT_S


def test_every_log_group_has_retention_and_every_function_a_log_group() -> None:
    groups = {n: r for n, r in _resources().items() if r["Type"] == "AWS::Logs::LogGroup"}
    functions = [n for n, r in _resources().items() if r["Type"] == "AWS::Serverless::Function"]
    named = {
        json.dumps(g["Properties"].get("LogGroupName"), sort_keys=True) for g in groups.values()
    }

    assert groups
    assert all(
        g["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups.values()
    )
    for function in functions:
        assert json.dumps({"Fn::Sub": f"/aws/lambda/${{{function}}}"}) in named, function
    destination = json.dumps(_access_log_setting()["DestinationArn"])
    assert '{"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}' in destination
    assert "ApiAccessLogGroup" in groups


def _access_log_setting() -> dict[str, Any]:
    """The stage's access log setting when ApiAccessLogging is Enabled."""
    setting = _resources()["ProvisioningApi"]["Properties"]["AccessLogSetting"]
    condition, enabled, disabled = setting["Fn::If"]
    assert condition == "AccessLogging"
    assert disabled == {"Ref": "AWS::NoValue"}
    assert isinstance(enabled, dict)
    return enabled


def test_access_log_is_json_with_the_caller_and_without_the_token() -> None:
    access_log = _access_log_setting()["Format"]
    placeholder = re.sub(r"\$context\.[A-Za-z.]+", "x", access_log)

    fields = json.loads(placeholder)
    assert {"requestId", "ip", "caller", "status"} <= set(fields)
    assert "$context.authorizer.claims.sub" in access_log
    assert "authorization" not in access_log.lower()


# ---------------------------------------------------------------- Cognito


def test_app_client_is_public_with_the_allowed_flows_only() -> None:
    client = _resources()["UserPoolClient"]["Properties"]

    assert client["GenerateSecret"] is False
    assert set(client["ExplicitAuthFlows"]) == {
        "ALLOW_USER_SRP_AUTH",
        "ALLOW_USER_PASSWORD_AUTH",
        "ALLOW_REFRESH_TOKEN_AUTH",
    }
    assert client["PreventUserExistenceErrors"] == "ENABLED"


def test_only_administrators_create_users_and_passwords_are_strong() -> None:
    pool = _resources()["UserPool"]["Properties"]
    password = pool["Policies"]["PasswordPolicy"]

    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert password["MinimumLength"] >= 12
    assert all(
        password[k]
        for k in ("RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols")
    )


def test_group_names_are_the_ones_the_api_authorizes_on_and_admin_is_in_administrators() -> None:
    resources = _resources()
    attachment = resources["AdminUserInAdministrators"]["Properties"]

    assert resources["AdministratorsGroup"]["Properties"]["GroupName"] == "Administrators"
    assert resources["MembersGroup"]["Properties"]["GroupName"] == "Members"
    assert attachment["GroupName"] == {"Ref": "AdministratorsGroup"}
    assert attachment["Username"] == {"Ref": "AdminUser"}


# ---------------------------------------------------------------- DynamoDB


@pytest.mark.parametrize(
    ("table", "keys"),
    [
        ("DevicesTable", {"dsn": "HASH"}),
        ("AuditTable", {"pk": "HASH", "sk": "RANGE"}),
        ("AllowlistTable", {"dsn": "HASH"}),
    ],
)
def test_tables_keep_their_data(table: str, keys: dict[str, str]) -> None:
    resource = _resources()[table]
    properties = resource["Properties"]

    assert {k["AttributeName"]: k["KeyType"] for k in properties["KeySchema"]} == keys
    assert resource["DeletionPolicy"] == "Retain"
    assert resource["UpdateReplacePolicy"] == "Retain"
    assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert properties["SSESpecification"]["SSEEnabled"] is True
    assert "TableName" not in properties


# ---------------------------------------------------------------- IoT device policy


def _device_policy() -> dict[str, Any]:
    document: dict[str, Any] = _resources()["DevicePolicy"]["Properties"]["PolicyDocument"]
    return document


def test_device_policy_confines_each_device_to_its_own_thing_name() -> None:
    statements = _device_policy()["Statement"]
    resources = [_resolve_sub(r) for s in statements for r in _as_list(s["Resource"])]

    assert resources
    assert all(THING_NAME_VARIABLE in r for r in resources)
    assert "*" not in resources
    assert "PolicyName" not in _resources()["DevicePolicy"]["Properties"]


def test_device_policy_connects_only_while_the_certificate_is_attached_to_the_thing() -> None:
    connect = [s for s in _device_policy()["Statement"] if "iot:Connect" in _as_list(s["Action"])]

    assert len(connect) == 1
    assert _resolve_sub(connect[0]["Resource"]).endswith(f":client/{THING_NAME_VARIABLE}")
    assert connect[0]["Condition"] == {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}


def test_device_policy_fits_the_iot_size_limit_in_every_region() -> None:
    document = copy.deepcopy(json.loads(json.dumps(_device_policy())))
    for statement in document["Statement"]:
        resources = [_resolve_sub(r) for r in _as_list(statement["Resource"])]
        statement["Resource"] = resources

    size = len(json.dumps(document, separators=(",", ":")))

    assert size < IOT_POLICY_DOCUMENT_MAX_CHARS


# ---------------------------------------------------------------- Lambda IAM


def _iam_resource_types() -> dict[str, list[str]]:
    """IAM resource types per action, from the service data cfn-lint ships."""
    import cfnlint

    data_file = Path(cfnlint.__file__).parent / "data" / "AdditionalSpecs" / "Policies.json"
    data = json.loads(data_file.read_text())
    types: dict[str, list[str]] = {}
    for service in ("iot", "acm-pca", "dynamodb"):
        for action, spec in data[service]["Actions"].items():
            types[f"{service}:{action}"] = spec.get("Resources", [])
    return types


@pytest.mark.parametrize(
    "function_id", ["ProvisioningFunction", "SweeperFunction", "DeploymentFunction"]
)
def test_wildcard_resources_only_where_iam_cannot_scope_the_action(function_id: str) -> None:
    resource_types = _iam_resource_types()

    for statement in _statements(function_id):
        actions = _as_list(statement["Action"])
        assert not [a for a in actions if "*" in a], statement
        if "*" in _as_list(statement["Resource"]):
            scopable = [a for a in actions if resource_types[a.lower()]]
            assert scopable == [], f"{function_id}: {scopable} could be scoped to ARNs"


@pytest.mark.parametrize(
    "function_id", ["ProvisioningFunction", "SweeperFunction", "DeploymentFunction"]
)
def test_every_action_is_a_real_iam_action(function_id: str) -> None:
    resource_types = _iam_resource_types()
    actions = [a for s in _statements(function_id) for a in _as_list(s["Action"])]

    assert [a for a in actions if a.lower() not in resource_types] == []


def test_provisioning_function_issues_only_client_auth_certificates_from_its_ca() -> None:
    issue = [
        s
        for s in _statements("ProvisioningFunction")
        if "acm-pca:IssueCertificate" in _as_list(s["Action"])
    ]

    assert len(issue) == 1
    assert issue[0]["Resource"] == {"Ref": "IssuingCertificateAuthority"}
    template_arn = issue[0]["Condition"]["StringEquals"]["acm-pca:TemplateArn"]
    assert _resolve_sub(template_arn).endswith(
        ":acm-pca:::template/EndEntityClientAuthCertificate_APIPassthrough/V1"
    )


def test_deployment_function_issues_only_the_verification_certificate_its_code_asks_for() -> None:
    from ca_registration.service import VERIFICATION_TEMPLATE

    issue = [
        s
        for s in _statements("DeploymentFunction")
        if "acm-pca:IssueCertificate" in _as_list(s["Action"])
    ]

    assert len(issue) == 1
    assert issue[0]["Resource"] == {"Ref": "IssuingCertificateAuthority"}
    template_arn = issue[0]["Condition"]["StringEquals"]["acm-pca:TemplateArn"]
    assert _resolve_sub(template_arn).endswith(f":acm-pca:::{VERIFICATION_TEMPLATE}")
    # never a CA certificate, and never one a device could authenticate with
    assert VERIFICATION_TEMPLATE == "template/EndEntityServerAuthCertificate/V1"


def test_no_function_may_issue_from_the_root() -> None:
    # The root signs only the issuing CA, at deploy time: no role of the stack may use it.
    issuing = sorted(
        (function, json.dumps(s["Resource"], sort_keys=True))
        for function, resource in _resources().items()
        if resource["Type"] == "AWS::Serverless::Function"
        for s in _statements(function)
        if any(a in ("acm-pca:IssueCertificate", "acm-pca:*") for a in _as_list(s["Action"]))
    )
    only_issuing = json.dumps({"Ref": "IssuingCertificateAuthority"})
    assert issuing == [
        ("DeploymentFunction", only_issuing),
        ("ProvisioningFunction", only_issuing),
        ("RenewalFunction", only_issuing),
    ]


def test_deployment_function_revokes_only_on_its_ca() -> None:
    revoke = [
        s
        for s in _statements("DeploymentFunction")
        if "acm-pca:RevokeCertificate" in _as_list(s["Action"])
    ]

    assert len(revoke) == 1
    assert revoke[0]["Resource"] == {"Ref": "IssuingCertificateAuthority"}


# Actions IAM checks although no method of that name is called.
_AUTHORIZED_BY_ANOTHER_CALL = {
    # RegisterCACertificate with tags is also authorized as iot:TagResource.
    "iot:TagResource": "register_ca_certificate",
}
# TransactWriteItems is authorized per item by the per-item action.
_TRANSACT_ITEM_KEYS = {
    "dynamodb:PutItem": "Put",
    "dynamodb:UpdateItem": "Update",
    "dynamodb:DeleteItem": "Delete",
    "dynamodb:ConditionCheckItem": "ConditionCheck",
}


@pytest.mark.parametrize(
    ("function_id", "package"),
    [
        ("ProvisioningFunction", "provisioning_lambda/provisioning"),
        ("SweeperFunction", "provisioning_lambda/provisioning"),
        ("DeploymentFunction", "deployment_lambda/ca_registration"),
    ],
)
def test_every_granted_action_is_called_by_the_function(function_id: str, package: str) -> None:
    from botocore import xform_name

    source = "\n".join(p.read_text() for p in sorted((ROOT / package).rglob("*.py")))
    called = set(re.findall(r"\.([a-z][a-z0-9_]*)\b", source))

    def used(action: str) -> bool:
        operation = xform_name(action.split(":", 1)[1])
        if operation in called or _AUTHORIZED_BY_ANOTHER_CALL.get(action) in called:
            return True
        item = _TRANSACT_ITEM_KEYS.get(action)
        in_transaction = re.search(rf'\{{\s*"{item}":', source) is not None
        return bool(item) and "transact_write_items" in called and in_transaction

    actions = {a for s in _statements(function_id) for a in _as_list(s["Action"])}
    assert sorted(a for a in actions if not used(a)) == []


def test_provisioning_function_creates_only_prefixed_things() -> None:
    create = [
        s for s in _statements("ProvisioningFunction") if "iot:CreateThing" in _as_list(s["Action"])
    ]

    assert len(create) == 1
    things = [_resolve_sub(r, {"ThingPrefix": "device"}) for r in _as_list(create[0]["Resource"])]
    assert things == ["arn:aws-iso-b:iot:ap-southeast-5:123456789012:thing/device_*"]


# ---------------------------------------------------------------- request model


def _ecma_262(pattern: str) -> re.Pattern[str]:
    """Compile a JSON Schema pattern with ECMA-262 semantics, which JSON Schema prescribes.

    The only difference that matters here: without the multiline flag ECMA's `$` matches only
    at the very end, while Python's also matches before a final newline. A pattern is applied
    as a search (unanchored) in both.
    """
    assert pattern.endswith("$") and not pattern.endswith("\\$")
    return re.compile(pattern[:-1] + r"\Z")


DSN_PATTERN = _ecma_262(_model_schema()["properties"]["DSN"]["pattern"])
PUBLIC_KEY_PATTERN = _ecma_262(_model_schema()["properties"]["publicKey"]["pattern"])


def test_model_and_function_accept_the_same_fields() -> None:
    # API Gateway and the function must agree: a body one accepts the other must not refuse.
    from provisioning.domain.models import ALLOWED_FIELDS, ENCRYPTION_SCHEMES, MAX_CSR_CHARS

    schema = _model_schema()

    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert set(schema["required"]) == {"DSN"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["csr"]["maxLength"] == MAX_CSR_CHARS
    assert set(schema["properties"]) == ALLOWED_FIELDS
    assert schema["properties"]["encryption"] == {
        "type": "string",
        "description": schema["properties"]["encryption"]["description"],
        "enum": list(ENCRYPTION_SCHEMES),
    }


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"DSN": "A1", "publicKey": "A" * 43 + "="}, True),
        ({"DSN": "A1", "publicKey": "A" * 43 + "=", "encryption": "fernet-x25519"}, True),
        ({"DSN": "A1", "csr": "-----BEGIN CERTIFICATE REQUEST-----" + "A" * 64}, True),
        ({"DSN": "A1"}, False),
        (
            {
                "DSN": "A1",
                "publicKey": "A" * 43 + "=",
                "csr": "-----BEGIN CERTIFICATE REQUEST-----" + "A" * 64,
            },
            False,
        ),
        (
            {
                "DSN": "A1",
                "csr": "-----BEGIN CERTIFICATE REQUEST-----" + "A" * 64,
                "encryption": "fernet-x25519",
            },
            False,
        ),
        ({"DSN": "A1", "csr": "-----BEGIN CERTIFICATE REQUEST-----" + "A" * 7000}, False),
    ],
)
def test_the_model_takes_exactly_one_of_public_key_and_csr(
    body: dict[str, str], valid: bool
) -> None:
    # The same draft-04 validation API Gateway (and the offline gateway) applies.
    import jsonschema

    errors = list(jsonschema.Draft4Validator(_model_schema()).iter_errors(body))
    assert (errors == []) is valid


@pytest.mark.parametrize("dsn", ["ABC_123-x", "a", "Z" * 115])
def test_dsn_pattern_accepts_serial_numbers(dsn: str) -> None:
    assert DSN_PATTERN.search(dsn)


@pytest.mark.parametrize("dsn", ["a b", "../x", "Z" * 116, "", "abc\n", "déjà", "a:b"])
def test_dsn_pattern_rejects_anything_else(dsn: str) -> None:
    # A schema pattern is searched for, not matched: the anchors must hold the whole string.
    assert not DSN_PATTERN.search(dsn)


def test_dsn_pattern_leaves_room_for_the_prefix_in_a_thing_name() -> None:
    prefix_pattern = _template()["Parameters"]["ThingPrefix"]["AllowedPattern"]
    longest = re.fullmatch(r"\^\[[^]]+\]\{1,(\d+)\}\$", prefix_pattern)
    assert longest, prefix_pattern
    prefix_len = int(longest.group(1))

    assert prefix_len + 1 + _model_schema()["properties"]["DSN"]["maxLength"] <= 128


def test_public_key_pattern_accepts_a_base64_x25519_key() -> None:
    key = base64.b64encode(os.urandom(32)).decode()

    assert PUBLIC_KEY_PATTERN.search(key)


@pytest.mark.parametrize("size", [31, 33, 0, 64])
def test_public_key_pattern_rejects_other_sizes(size: int) -> None:
    assert not PUBLIC_KEY_PATTERN.search(base64.b64encode(os.urandom(size)).decode())


def test_public_key_pattern_rejects_url_safe_base64() -> None:
    key = base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode()

    assert not PUBLIC_KEY_PATTERN.search(key)


# ---------------------------------------------------------------- a fresh account, safe updates


def test_access_logging_waits_for_the_account_role_it_needs() -> None:
    # A fresh account has no API Gateway CloudWatch role: the stage with access logs would be
    # refused. The stack sets one (unless told the account has it) before the stage is made.
    conditions = _template()["Conditions"]
    resources = _resources()
    destination = _access_log_setting()["DestinationArn"]

    assert conditions["AccessLogging"] == {"Fn::Equals": [{"Ref": "ApiAccessLogging"}, "Enabled"]}
    assert conditions["CreatesApiGatewayAccountRole"] == {
        "Fn::And": [
            {"Condition": "AccessLogging"},
            {"Fn::Equals": [{"Ref": "CreateApiGatewayAccountRole"}, "true"]},
        ]
    }
    assert resources["ApiGatewayAccount"]["Condition"] == "CreatesApiGatewayAccountRole"
    assert resources["ApiGatewayAccount"]["Properties"]["CloudWatchRoleArn"] == {
        "Fn::GetAtt": ["ApiGatewayCloudWatchRole", "Arn"]
    }
    role = resources["ApiGatewayCloudWatchRole"]
    assert role["Condition"] == "CreatesApiGatewayAccountRole"
    assert role["DeletionPolicy"] == "Retain"  # the account setting outlives the stack
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "apigateway.amazonaws.com"
    }
    when_created, otherwise = destination["Fn::If"][1:]
    assert destination["Fn::If"][0] == "CreatesApiGatewayAccountRole"
    assert {"Ref": "ApiGatewayAccount"} in when_created["Fn::Select"][1]
    assert when_created["Fn::Select"][0] == 0  # the log group's ARN, unchanged
    assert otherwise == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}


def test_the_custom_resource_gives_up_in_minutes_not_an_hour() -> None:
    registration = _resources()["CaRegistration"]["Properties"]
    function = _resources()["DeploymentFunction"]["Properties"]

    # Long enough for one answer: the longest an invocation may wait, then run.
    invoke = function["EventInvokeConfig"]
    longest = invoke["MaximumEventAgeInSeconds"] + function["Timeout"]
    assert longest < registration["ServiceTimeout"] <= 15 * 60


def test_the_custom_resource_is_never_run_again_by_lambda() -> None:
    """Lambda retries a failed asynchronous invocation twice by default: a Create that timed
    out would run again, possibly after the rollback's Delete has removed what it made."""
    invoke = _resources()["DeploymentFunction"]["Properties"]["EventInvokeConfig"]
    assert invoke["MaximumRetryAttempts"] == 0


def test_the_ca_and_its_activation_outlive_replacement_and_stack_delete() -> None:
    for name in (
        "CertificateAuthority",
        "CAActivation",
        "IssuingCertificateAuthority",
        "IssuingCAActivation",
    ):
        resource = _resources()[name]
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == (
            "Retain",
            "Retain",
        ), name


@pytest.mark.parametrize(
    ("variable", "device", "ca"),
    [
        ("SUBJECT_O", "DeviceSubjectOrganization", "CaOrganization"),
        ("SUBJECT_OU", "DeviceSubjectOrganizationalUnit", "CaOrganizationalUnit"),
        ("SUBJECT_C", "DeviceSubjectCountry", "CaCountry"),
    ],
)
def test_device_subject_has_its_own_parameters_and_defaults_to_the_cas(
    variable: str, device: str, ca: str
) -> None:
    env = _resources()["ProvisioningFunction"]["Properties"]["Environment"]["Variables"]
    condition, then, otherwise = env[variable]["Fn::If"]

    assert _template()["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": device}, ""]}]
    }
    assert (then, otherwise) == ({"Ref": device}, {"Ref": ca})
    assert _template()["Parameters"][device]["Default"] == ""
    ca_subject = json.dumps(_resources()["CertificateAuthority"]["Properties"]["Subject"])
    assert device not in ca_subject


def test_provisioning_concurrency_is_capped_above_the_api_burst() -> None:
    parameters = _template()["Parameters"]
    reserved = _resources()["ProvisioningFunction"]["Properties"]["ReservedConcurrentExecutions"]
    pattern = re.compile(parameters["ProvisioningReservedConcurrency"]["AllowedPattern"])
    default = parameters["ProvisioningReservedConcurrency"]["Default"]

    assert reserved == {
        "Fn::If": [
            "ReservesConcurrency",
            {"Ref": "ProvisioningReservedConcurrency"},
            {"Ref": "AWS::NoValue"},
        ]
    }
    # Below the rate times the function's duration, Lambda throttles (a 502 from API Gateway)
    # before the API answers 429: at least 5 s of requests at the stage's rate, and the burst.
    assert int(default) >= 5 * parameters["ApiThrottleRateLimit"]["Default"]
    assert int(default) >= parameters["ApiThrottleBurstLimit"]["Default"]
    assert pattern.fullmatch("unreserved") and pattern.fullmatch("20")
    assert not pattern.fullmatch("0"), "0 would stop every request"


def test_unreserved_provisioning_leaves_nothing_reserved_but_renewal_s_own_choice() -> None:
    # An account whose concurrency quota is 10 can reserve nothing: "unreserved" must deploy
    sweeper = _resources()["SweeperFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert sweeper == {"Fn::If": ["ReservesConcurrency", 1, {"Ref": "AWS::NoValue"}]}
    reserving = [
        name
        for name, resource in _resources().items()
        if isinstance(resource.get("Properties", {}).get("ReservedConcurrentExecutions"), int)
    ]
    assert reserving == []


# ---------------------------------------------------------------- config.json


def test_config_json_maps_onto_the_parameter_defaults() -> None:
    # config.json becomes parameter overrides at deploy time; out of the box it changes nothing.
    config = json.loads(CONFIG_PATH.read_text())
    parameters = _template()["Parameters"]
    subject = config["certificate"]["subject"]
    overrides = {
        "CaCommonName": subject["CN"],
        "CaOrganization": subject["O"],
        "CaOrganizationalUnit": subject["OU"],
        "CaLocality": subject["L"],
        "CaState": subject["ST"],
        "CaCountry": subject["C"],
        "CaValidityYears": config["certificate"]["Validity"],
        "DeviceCertValidityDays": config["iot"]["certValidity"] * 365,
        "ThingPrefix": config["iot"]["thingPrefix"],
        "ThingGroupName": config["iot"]["thingGroup"],
    }

    assert overrides == {name: parameters[name]["Default"] for name in overrides}
    assert config["iot"]["certValidity"] < config["certificate"]["Validity"]
