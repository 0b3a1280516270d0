"""Read ``template.yaml`` and expand it with the SAM translator.

The local stack is created from exactly what ``sam deploy`` would hand CloudFormation, so it
cannot drift from the template: no resource is described a second time here.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml
from samtranslator.metrics.metrics import DummyMetricsPublisher, Metrics
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import intrinsics_multi_constructor

from devstack.errors import DeployError

# SAM wants an S3 URI for a function's code; the real packaging step (sam build/package) is
# replaced here by remembering the local directory and handing the translator a placeholder.
_PLACEHOLDER_BUCKET = "devstack-local-code"


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no stubs here
    """A YAML loader that understands the short forms (!Ref, !Sub, !GetAtt...)."""


_CfnLoader.add_multi_constructor("!", intrinsics_multi_constructor)


@dataclass(frozen=True)
class ExpandedTemplate:
    """The CloudFormation template SAM produces, plus what packaging would have consumed."""

    template: dict[str, Any]
    code_uris: dict[str, Path]  # function logical ID -> local code directory
    source_dir: Path


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeployError(f"cannot read template {path}: {exc.strerror}") from exc


# Parsing and translating take a good part of a second each; a test session or an offline stack
# does both many times over the same text. Both are cached by content (and, for the translation,
# by parameters and Region), and every caller gets its own deep copy to change as it likes.
@functools.lru_cache(maxsize=8)
def _parse(text: str, name: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise DeployError(f"{name} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise DeployError(f"{name} has no Resources section")
    return data


def load_yaml(path: Path) -> dict[str, Any]:
    return copy.deepcopy(_parse(_read(path), str(path)))


def _code_uri(value: Any, logical_id: str, base: Path) -> Path:
    if isinstance(value, dict) and "Bucket" not in value:
        raise DeployError(f"{logical_id}: CodeUri must be a local directory offline, got {value}")
    if not isinstance(value, str) or value.startswith("s3://"):
        raise DeployError(f"{logical_id}: CodeUri {value!r} is not a local directory")
    path = (base / value).resolve()
    if not path.is_dir():
        raise DeployError(f"{logical_id}: CodeUri {value!r} is not a directory ({path})")
    return path


def _take_code_uris(fragment: dict[str, Any], base: Path) -> dict[str, Path]:
    """Function logical ID -> local code directory; the template's CodeUris become placeholders."""
    global_code = fragment.get("Globals", {}).get("Function", {}).pop("CodeUri", None)
    code_uris: dict[str, Path] = {}
    for logical_id, resource in fragment["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.setdefault("Properties", {})
        code = props.get("CodeUri", global_code)
        if code is None:
            raise DeployError(f"{logical_id}: no CodeUri (inline code is not supported offline)")
        code_uris[logical_id] = _code_uri(code, logical_id, base)
        props["CodeUri"] = f"s3://{_PLACEHOLDER_BUCKET}/{logical_id}"
    return code_uris


def function_code_uris(path: Path) -> dict[str, Path]:
    """Each AWS::Serverless::Function's code directory: what ``sam build`` packages."""
    path = Path(path)
    return _take_code_uris(load_yaml(path), path.resolve().parent)


def expand(path: Path, parameters: dict[str, str], region: str) -> ExpandedTemplate:
    """Translate the SAM template at ``path`` into plain CloudFormation."""
    path = Path(path)
    fragment = load_yaml(path)
    base = path.resolve().parent
    code_uris = _take_code_uris(fragment, base)
    # The translation depends on the text, the parameters and the Region only: the code
    # directories were just checked and replaced by placeholders named after the functions.
    translated = _translate(_read(path), str(path), tuple(sorted(parameters.items())), region)
    return ExpandedTemplate(
        template=copy.deepcopy(translated), code_uris=code_uris, source_dir=base
    )


@functools.lru_cache(maxsize=8)
def _translate(
    text: str, name: str, parameters: tuple[tuple[str, str], ...], region: str
) -> dict[str, Any]:
    fragment = copy.deepcopy(_parse(text, name))
    _take_code_uris(fragment, Path(name).resolve().parent)
    # The translator records usage metrics as it works and, if nobody publishes them, warns
    # "There are unpublished metrics" when it is collected (at the next translation or at
    # exit). They go to a publisher that drops them (what the translator does offline), and
    # are published once the translation is over, so nothing is left to warn about.
    usage = Metrics("ServerlessTransform", DummyMetricsPublisher())
    translator = Translator(
        None, Parser(), boto_session=boto3.Session(region_name=region), metrics=usage
    )
    # The translator warns about feature toggles it has no config for; that is noise here.
    logging.getLogger("samtranslator.feature_toggle.feature_toggle").setLevel(logging.ERROR)
    try:
        translated: dict[str, Any] = translator.translate(
            fragment,
            parameter_values=dict(parameters),
            get_managed_policy_map=dict,  # managed policies only matter to IAM, skipped offline
        )
    except InvalidDocumentException as exc:
        causes = "; ".join(str(cause) for cause in exc.causes)
        raise DeployError(f"SAM translation of {name} failed: {causes}") from exc
    finally:
        usage.publish()
    return translated
