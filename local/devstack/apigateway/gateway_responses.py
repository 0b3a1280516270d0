"""API Gateway's own error responses, as the template defines them (GatewayResponses).

The SAM translator turns the API's ``GatewayResponses`` into the definition's
``x-amazon-apigateway-gateway-responses``: per response type, a status code, static headers
(``gatewayresponse.header.<Name>: "'value'"``) and mapping templates. ``parse`` reads them
from the translated definition; ``GatewayResponses.render`` answers an error of a given type
the way API Gateway does:

- the type's own response if the template defines it; otherwise DEFAULT_4XX or DEFAULT_5XX
  (by the type's status class) if that is defined; otherwise API Gateway's built-in answer,
  ``{"message": "<message>"}`` with the type's default status;
- the status: the response's ``statusCode``, else the fallback's, else the status API Gateway
  uses for that error;
- the body: the ``application/json`` template (else the first one) with the few ``$context``
  variables a gateway response can use substituted; fixed templates come out verbatim.
  ``$context.error.validationErrorString`` (a refused body's validator messages) is escaped
  for a JSON string, since a template puts it between quotes: the body stays JSON whatever
  the request held.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Response type -> API Gateway's default status code (None: keeps the error's own status).
DEFAULT_STATUS: dict[str, int | None] = {
    "ACCESS_DENIED": 403,
    "API_CONFIGURATION_ERROR": 500,
    "AUTHORIZER_CONFIGURATION_ERROR": 500,
    "AUTHORIZER_FAILURE": 500,
    "BAD_REQUEST_PARAMETERS": 400,
    "BAD_REQUEST_BODY": 400,
    "DEFAULT_4XX": None,
    "DEFAULT_5XX": None,
    "EXPIRED_TOKEN": 403,
    "INTEGRATION_FAILURE": 504,
    "INTEGRATION_TIMEOUT": 504,
    "INVALID_API_KEY": 403,
    "INVALID_SIGNATURE": 403,
    "MISSING_AUTHENTICATION_TOKEN": 403,
    "QUOTA_EXCEEDED": 429,
    "REQUEST_TOO_LARGE": 413,
    "RESOURCE_NOT_FOUND": 404,
    "THROTTLED": 429,
    "UNAUTHORIZED": 401,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "WAF_FILTERED": 403,
}
_EXTENSION = "x-amazon-apigateway-gateway-responses"
_HEADER_PREFIX = "gatewayresponse.header."
_VARIABLE = re.compile(r"\$(!?)(\{)?context\.([A-Za-z.]+)(?(2)\})")


@dataclass(frozen=True)
class GatewayResponseSpec:
    """One response type as the template configures it."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    templates: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderedResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def _static_headers(parameters: Mapping[str, Any]) -> dict[str, str]:
    """Header parameters with static values ('...'); anything else is not emulated."""
    headers: dict[str, str] = {}
    for key, value in parameters.items():
        text = str(value)
        if key.startswith(_HEADER_PREFIX) and len(text) >= 2 and text[0] == text[-1] == "'":
            headers[key[len(_HEADER_PREFIX) :]] = text[1:-1]
    return headers


def _render_template(template: str, variables: Mapping[str, str]) -> str:
    def substitute(found: re.Match[str]) -> str:
        value = variables.get(found.group(3))
        if value is not None:
            return value
        return "" if found.group(1) else found.group(0)

    return _VARIABLE.sub(substitute, template)


@dataclass(frozen=True)
class GatewayResponses:
    """The API's gateway responses, by response type."""

    defined: dict[str, GatewayResponseSpec] = field(default_factory=dict)

    def _spec(self, response_type: str, status: int) -> GatewayResponseSpec | None:
        if response_type in self.defined:
            return self.defined[response_type]
        return self.defined.get("DEFAULT_4XX" if status < 500 else "DEFAULT_5XX")

    def render(
        self,
        response_type: str,
        message: str,
        *,
        status: int | None = None,
        request_id: str = "",
        validation_error: str = "",
    ) -> RenderedResponse:
        """API Gateway's answer to an error of ``response_type``.

        ``status`` is the status API Gateway uses for this particular error when the
        template does not set one (a Lambda failure is a 502 under INTEGRATION_FAILURE).
        """
        default = status or DEFAULT_STATUS.get(response_type) or 500
        spec = self._spec(response_type, default)
        code = (spec.status if spec else None) or default
        variables = {
            "error.message": message,
            "error.messageString": json.dumps(message),
            "error.responseType": response_type,
            # Escaped for a JSON string: templates put it between quotes.
            "error.validationErrorString": json.dumps(validation_error)[1:-1],
            "requestId": request_id,
        }
        headers = {"Content-Type": "application/json"}
        if spec is not None and spec.templates:
            template = spec.templates.get("application/json") or next(iter(spec.templates.values()))
            body = _render_template(template, variables)
        else:
            body = json.dumps({"message": message})
        if spec is not None:
            headers.update(spec.headers)
        return RenderedResponse(code, headers, body.encode())


def parse(definition: Mapping[str, Any]) -> GatewayResponses:
    """The gateway responses of a translated API definition (Swagger 2.0 or OpenAPI 3)."""
    defined: dict[str, GatewayResponseSpec] = {}
    for response_type, config in (definition.get(_EXTENSION) or {}).items():
        status = config.get("statusCode")
        defined[str(response_type)] = GatewayResponseSpec(
            status=int(status) if status not in (None, "") else None,
            headers=_static_headers(config.get("responseParameters") or {}),
            templates={str(k): str(v) for k, v in (config.get("responseTemplates") or {}).items()},
        )
    return GatewayResponses(defined)
