"""docs/openapi.yaml is the API's contract: it must stay the API that template.yaml deploys and
the function's code answers. Each test here fails when the two drift apart: a route added on
one side only, a model changed in the template and not in the contract, an error code the
function can raise that the contract does not list, a gateway response whose code is missing.
"""

from __future__ import annotations

import ast
import copy
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from devstack.cloudformation.template import load_yaml

ROOT = Path(__file__).resolve().parents[2]
CONTRACT: dict[str, Any] = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
TEMPLATE = load_yaml(ROOT / "template.yaml")
API = TEMPLATE["Resources"]["ProvisioningApi"]["Properties"]
PACKAGE = ROOT / "provisioning_lambda" / "provisioning"
METHODS = ("get", "put", "post", "delete", "patch")

# The domain's error classes: status, and the code a raise without its own code answers.
ERROR_CLASSES = {
    "BadRequest": (400, "BAD_REQUEST"),
    "Forbidden": (403, "FORBIDDEN"),
    "NotFound": (404, "DEVICE_NOT_FOUND"),
    "Conflict": (409, "CONFLICT"),
    "ProvisioningError": (500, "INTERNAL_ERROR"),
}
# Errors named by a step: <STEP>_FAILED / <STEP>_TIMEOUT (502) and THROTTLED (429).
STEP_CLASSES = {"DependencyFailed", "OutcomeUnknown", "OutOfTime", "Throttled"}
# The renewal over MQTT (not an API route) answers on its own topic, with its own codes.
NOT_API = {PACKAGE / "usecases" / "renew.py"}
# Gateway responses that are no route's answer: no such route (the path is not in the
# contract), request-parameter validation (no route configures it), and DEFAULT_4XX (a 4xx
# API Gateway raises of a type the template does not name; none is reachable by these routes).
NOT_PER_ROUTE = {"ROUTE_NOT_FOUND", "BAD_REQUEST_PARAMETERS", "BAD_REQUEST"}


def node_ref_parts(ref: str) -> list[str]:
    return ref.removeprefix("#/").split("/")


def follow(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = CONTRACT
        for part in node_ref_parts(node["$ref"]):
            target = target[part]
        node = target
    return node


def template_routes() -> dict[tuple[str, str], dict[str, Any]]:
    """(path, method) -> the Api event's properties, for every event on ProvisioningApi."""
    routes = {}
    for resource in TEMPLATE["Resources"].values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in resource["Properties"].get("Events", {}).values():
            props = event.get("Properties", {})
            if event.get("Type") == "Api" and props.get("RestApiId") == {"Ref": "ProvisioningApi"}:
                routes[(props["Path"], props["Method"].lower())] = props
    return routes


def contract_operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in CONTRACT["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def documented_codes() -> dict[int, set[str]]:
    """Status -> every code some operation documents for it (enums of the error schemas)."""
    codes: dict[int, set[str]] = defaultdict(set)
    for _, _, operation in contract_operations():
        for status, response in operation["responses"].items():
            code = error_code_schema(follow(response))
            if code is not None:
                codes[int(status)].update(code.get("enum", []))
    return codes


def error_code_schema(response: dict[str, Any]) -> dict[str, Any] | None:
    schema = follow(response.get("content", {}).get("application/json", {}).get("schema", {}))
    if set(schema.get("required", [])) == {"msg", "code"}:
        code: dict[str, Any] = schema["properties"]["code"]
        return code
    return None


def raised_codes() -> tuple[set[tuple[int, str]], set[str]]:
    """Every (status, code) the API's code raises with a literal code, and every literal step."""
    codes: set[tuple[int, str]] = set()
    steps: set[str] = set()
    for source in PACKAGE.rglob("*.py"):
        if source in NOT_API:
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            name = node.func.id
            if name in ERROR_CLASSES:
                status, default = ERROR_CLASSES[name]
                given = node.args[1] if len(node.args) > 1 else None
                given = next((k.value for k in node.keywords if k.arg == "code"), given)
                if given is None:
                    codes.add((status, default))
                elif isinstance(given, ast.Constant):
                    codes.add((status, given.value))
            elif name in STEP_CLASSES and node.args and isinstance(node.args[0], ast.Constant):
                steps.add(node.args[0].value)
    return codes, steps


def test_the_contract_is_a_valid_openapi_document() -> None:
    validate(CONTRACT)


def test_every_route_of_the_template_is_in_the_contract_and_no_other() -> None:
    contract = {(path, method) for path, method, _ in contract_operations()}
    assert contract == set(template_routes())


def test_every_operation_asks_for_the_cognito_id_token() -> None:
    scheme = CONTRACT["components"]["securitySchemes"]["CognitoIdToken"]
    assert scheme == scheme | {"type": "apiKey", "in": "header", "name": "Authorization"}
    assert API["Auth"]["DefaultAuthorizer"] == "CognitoAuthorizer"
    for path, method, operation in contract_operations():
        assert operation.get("security", CONTRACT["security"]) == [{"CognitoIdToken": []}], (
            path,
            method,
        )


@pytest.mark.parametrize(("path", "method"), sorted(template_routes()))
def test_a_modelled_body_is_the_templates_model(path: str, method: str) -> None:
    event = template_routes()[(path, method)]
    operation = CONTRACT["paths"][path][method]
    model = event.get("RequestModel")
    if model is None:
        body = operation.get("requestBody")
        assert body is None or body["required"] is False, "the gateway requires no body here"
        return
    body = operation["requestBody"]
    assert body["required"] is model["Required"]
    schema = body["content"]["application/json"]["schema"]
    assert schema == {"$ref": f"#/components/schemas/{model['Model']}"}
    expected = copy.deepcopy(API["Models"][model["Model"]])
    expected.pop("$schema")  # OpenAPI 3.0 takes the draft-04 subset without it
    assert follow(schema) == expected
    # API Gateway answers a body the model refuses with BAD_REQUEST_BODY
    assert "BAD_REQUEST_BODY" in error_code_schema(operation["responses"]["400"])["enum"]


def test_every_code_the_function_raises_is_documented_with_its_status() -> None:
    codes, _ = raised_codes()
    documented = documented_codes()
    missing = sorted((status, code) for status, code in codes if code not in documented[status])
    assert not missing
    # and a code is not documented under a status the function never gives it
    every = {code for _, code in codes} | gateway_codes()
    assert not {code for codes in documented.values() for code in codes} - every


def test_every_step_failure_fits_the_documented_502_codes() -> None:
    _, steps = raised_codes()
    assert steps, "no step found: the scan is broken"
    for _, _, operation in contract_operations():
        code = error_code_schema(follow(operation["responses"]["502"]))
        assert code is not None
        if "pattern" in code:
            for step in steps:
                for suffix in ("FAILED", "TIMEOUT"):
                    assert OAS30Validator(code).is_valid(f"{step}_{suffix}")


def gateway_codes() -> set[str]:
    return {
        yaml.safe_load(response["ResponseTemplates"]["application/json"])["code"]
        for response in API["GatewayResponses"].values()
    }


def test_every_gateway_response_is_documented_on_every_route() -> None:
    for response_type, response in API["GatewayResponses"].items():
        body = yaml.safe_load(response["ResponseTemplates"]["application/json"])
        if body["code"] in NOT_PER_ROUTE or response_type == "BAD_REQUEST_BODY":
            continue
        status = str(response.get("StatusCode") or 500)  # DEFAULT_5XX: a 500 of its own
        for path, method, operation in contract_operations():
            code = error_code_schema(follow(operation["responses"][status]))
            assert code is not None, (path, method, status)
            assert OAS30Validator(code).is_valid(body["code"]), (path, method, body["code"])


def test_the_shared_gateway_answers_show_the_templates_bodies() -> None:
    by_code = {
        yaml.safe_load(r["ResponseTemplates"]["application/json"])["code"]: yaml.safe_load(
            r["ResponseTemplates"]["application/json"]
        )
        for r in API["GatewayResponses"].values()
    }
    for response in CONTRACT["components"]["responses"].values():
        example = response["content"]["application/json"]["example"]
        assert example == by_code[example["code"]]


def test_every_example_fits_its_schema() -> None:
    for path, method, operation in contract_operations():
        bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
        for body in bodies:
            media = follow(body).get("content", {}).get("application/json")
            if media and "example" in media:
                schema = resolve_all(media["schema"])
                errors = list(OAS30Validator(schema).iter_errors(media["example"]))
                assert not errors, (path, method, [e.message for e in errors])


def resolve_all(node: Any) -> Any:
    """The schema with every ``$ref`` replaced by what it names."""
    node = follow(node)
    if isinstance(node, dict):
        return {key: resolve_all(value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve_all(value) for value in node]
    return node
