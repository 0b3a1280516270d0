"""The API model the local gateway serves: routes, Cognito authorizers, request models and
gateway responses of a REST API, read from its OpenAPI/Swagger definition (``api_spec``).

Methods with a Lambda proxy integration are ``Route``s; methods with a mock integration (the
CORS preflight the template's ``Cors`` makes: OPTIONS on every resource) are ``MockRoute``s,
answered by the gateway from the integration's default response alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devstack.apigateway.gateway_responses import GatewayResponses
from devstack.apigateway.gateway_responses import parse as parse_gateway_responses
from devstack.errors import DeployError


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
class MockRoute:
    """A method with a mock integration: API Gateway answers it without any backend, with the
    default integration response's status, static headers and template."""

    path: str
    method: str
    authorizer: CognitoAuthorizer | None
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


@dataclass(frozen=True)
class ApiSpec:
    logical_id: str
    api_id: str
    stage: str
    routes: tuple[Route, ...]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    gateway_responses: GatewayResponses = field(default_factory=GatewayResponses)
    mock_routes: tuple[MockRoute, ...] = ()


def api_spec(
    logical_id: str,
    api_id: str,
    stage: str,
    body: dict[str, Any],
    function_by_arn: dict[str, str],
    clients_by_pool: dict[str, list[str]],
) -> ApiSpec:
    """The API model of one REST API from its definition (``Body``), as API Gateway reads it.

    ``function_by_arn`` maps each template function's ARN to its logical ID (the proxy
    integrations' targets); ``clients_by_pool`` a user pool's ID to its app clients.
    """
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
    mock_routes: list[MockRoute] = []
    for path, methods in body.get("paths", {}).items():
        for method, operation in methods.items():
            integration = operation.get("x-amazon-apigateway-integration", {})
            security = operation.get("security", body.get("security", []))
            names = [name for requirement in security for name in requirement]
            authorizer = next((authorizers[n] for n in names if n in authorizers), None)
            if integration.get("type") == "mock":
                mock_routes.append(mock_route(path, method, integration, authorizer))
                continue
            if integration.get("type") != "aws_proxy":
                continue
            uri = integration.get("uri", "")
            function = next((lid for arn, lid in function_by_arn.items() if arn in uri), None)
            if function is None:
                raise DeployError(f"{logical_id}: {method} {path} targets no template function")
            model_name, content_types = body_model(operation, body)
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
        mock_routes=tuple(mock_routes),
    )


_METHOD_HEADER = "method.response.header."


def mock_route(
    path: str, method: str, integration: dict[str, Any], authorizer: CognitoAuthorizer | None
) -> MockRoute:
    """A mock integration's answer: its ``default`` integration response (the one SAM's CORS
    preflight has), with the header parameters that are static values ('...')."""
    default = (integration.get("responses") or {}).get("default") or {}
    headers: dict[str, str] = {}
    for key, value in (default.get("responseParameters") or {}).items():
        text = str(value)
        if key.startswith(_METHOD_HEADER) and len(text) >= 2 and text[0] == text[-1] == "'":
            headers[key[len(_METHOD_HEADER) :]] = text[1:-1]
    templates = default.get("responseTemplates") or {}
    body = templates.get("application/json") or next(iter(templates.values()), "")
    return MockRoute(
        path=path,
        method="ANY" if method == "x-amazon-apigateway-any-method" else method.upper(),
        authorizer=authorizer,
        status=int(default.get("statusCode") or 200),
        headers=headers,
        body=str(body),
    )


def body_model(
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
