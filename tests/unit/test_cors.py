"""CORS as the template declares it and as the function answers it.

The translated template (what `sam deploy` sends CloudFormation, and what the offline gateway
serves): a preflight on every resource, without the authorizer, for the app's origin, methods
and headers; Access-Control-Allow-Origin on every gateway response. The function: the header
for the app's origin, none for another, none without an origin.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from devstack.apigateway.api_model import mock_route
from devstack.apigateway.gateway_responses import DEFAULT_STATUS
from devstack.apigateway.gateway_responses import parse as parse_gateway_responses
from devstack.cloudformation.intrinsics import Resolver
from devstack.cloudformation.template import expand, load_yaml
from provisioning.config import APP_ORIGIN_PATTERN, ConfigError, app_origin
from provisioning.handlers import api
from tests.support.cors import preflight_allows

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
ORIGIN = "https://app.example.com"
APP_HEADERS = ["authorization", "content-type"]


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    """The API's translated definition, AppOrigin resolved."""
    parameters = {"AdminEmail": "a@example.com", "AppOrigin": ORIGIN}
    template = expand(TEMPLATE, parameters, "us-east-1").template
    resolver = Resolver(
        ref=lambda name: parameters.get(name, name),
        getatt=lambda logical_id, attribute: f"{logical_id}.{attribute}",
        conditions=template["Conditions"],
    )
    body: dict[str, Any] = resolver.resolve(
        template["Resources"]["ProvisioningApi"]["Properties"]["Body"]
    )
    return body


def test_every_resource_answers_the_preflight_for_its_methods(definition: dict[str, Any]) -> None:
    for path, methods in definition["paths"].items():
        # GIVEN a resource of the API and the methods the app may call on it
        called = [m.upper() for m in methods if m != "options"]
        assert "options" in methods, f"{path} has no preflight"
        # THEN its preflight is API Gateway's own answer, with no authorizer
        integration = methods["options"]["x-amazon-apigateway-integration"]
        assert integration["type"] == "mock"
        assert "security" not in methods["options"], f"OPTIONS {path} needs a token"
        preflight = mock_route(path, "options", integration, None)
        # ... and a browser on the app's origin may send each method with the app's headers
        for method in called:
            assert preflight_allows(200, _lower(preflight.headers), ORIGIN, method, APP_HEADERS)
        # ... and a browser on any other origin may not
        other = "https://evil.example"
        assert not preflight_allows(200, _lower(preflight.headers), other, "POST", APP_HEADERS)


def test_without_an_app_origin_no_page_may_call() -> None:
    # GIVEN the template's default AppOrigin (empty)
    template = expand(TEMPLATE, {"AdminEmail": "a@example.com"}, "us-east-1").template
    resolver = Resolver(
        ref=lambda name: "" if name == "AppOrigin" else name,
        getatt=lambda *_: "",
        conditions=template["Conditions"],
    )
    body = resolver.resolve(template["Resources"]["ProvisioningApi"]["Properties"]["Body"])
    integration = body["paths"]["/certificate"]["options"]["x-amazon-apigateway-integration"]
    headers = _lower(mock_route("/certificate", "options", integration, None).headers)
    # THEN the preflight names an origin no page can have (never an empty static value, which
    # API Gateway may refuse), and no page's browser lets it call
    assert headers["access-control-allow-origin"] == "https://app.invalid"
    for origin in (ORIGIN, "http://127.0.0.1:8080", "null"):
        assert not preflight_allows(200, headers, origin, "POST", APP_HEADERS)


def test_every_gateway_error_is_readable_by_the_app(definition: dict[str, Any]) -> None:
    responses = parse_gateway_responses(definition)
    declared = set(
        load_yaml(TEMPLATE)["Resources"]["ProvisioningApi"]["Properties"]["GatewayResponses"]
    )
    assert declared >= {"DEFAULT_4XX", "DEFAULT_5XX", "UNAUTHORIZED", "BAD_REQUEST_BODY"}
    # every type API Gateway has: declared ones and those that fall back to DEFAULT_4XX/5XX
    for response_type in DEFAULT_STATUS:
        rendered = responses.render(response_type, "message")
        assert rendered.headers.get("Access-Control-Allow-Origin") == ORIGIN, response_type
    throttled = responses.render("THROTTLED", "Too Many Requests")
    assert "Retry-After" in throttled.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize(
    "origin",
    [
        "",
        "https://app.example.com",
        "https://a.b.example:8443",
        "http://127.0.0.1:5173",
        "http://localhost:8080",
        "https://x-1.example:65535",
    ],
)
def test_app_origins_the_template_and_the_function_accept(origin: str) -> None:
    pattern = load_yaml(TEMPLATE)["Parameters"]["AppOrigin"]["AllowedPattern"]
    assert re.fullmatch(pattern, origin)
    assert app_origin({"APP_ORIGIN": origin}) == (origin or None)


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        "null",
        "https://app.example.com/",
        "https://app.example.com/path",
        "http://app.example.com",
        "HTTPS://APP.EXAMPLE.COM",
        "https://*.example.com",
        "app.example.com",
        # origins no browser sends: a port out of range, with a leading zero or the scheme's
        # default (left out of a page's Origin), and host names that are no DNS name
        "https://a:99999",
        "https://a:0",
        "https://x:00080",
        "https://app.example.com:443",
        "http://localhost:80",
        "https://a..b",
        "https://a.-b",
        "https://-a.example",
    ],
)
def test_app_origins_both_refuse(origin: str) -> None:
    pattern = load_yaml(TEMPLATE)["Parameters"]["AppOrigin"]["AllowedPattern"]
    assert not re.fullmatch(pattern, origin)
    assert not APP_ORIGIN_PATTERN.fullmatch(origin)
    with pytest.raises(ConfigError):
        app_origin({"APP_ORIGIN": origin})


def test_the_function_answers_cors_for_the_app_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ORIGIN", ORIGIN)
    config = api.cors()
    assert config is not None
    assert config.to_dict(ORIGIN)["Access-Control-Allow-Origin"] == ORIGIN
    assert "Retry-After" in config.to_dict(ORIGIN)["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in config.to_dict("https://evil.example")
    assert "Access-Control-Allow-Origin" not in config.to_dict(None)
    # no origin configured (AppOrigin's default), or a broken one: no CORS headers at all
    monkeypatch.setenv("APP_ORIGIN", "")
    assert api.cors() is None
    monkeypatch.setenv("APP_ORIGIN", "*")
    assert api.cors() is None


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def test_the_template_and_the_function_share_one_pattern() -> None:
    pattern = load_yaml(TEMPLATE)["Parameters"]["AppOrigin"]["AllowedPattern"]
    assert pattern == "^(|" + APP_ORIGIN_PATTERN.pattern + ")$"
