"""The API model the local gateway serves: routes, Cognito authorizers, request models and
gateway responses of a REST API, read from its OpenAPI/Swagger definition (``api_spec``).
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
class ApiSpec:
    logical_id: str
    api_id: str
    stage: str
    routes: tuple[Route, ...]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    gateway_responses: GatewayResponses = field(default_factory=GatewayResponses)


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
