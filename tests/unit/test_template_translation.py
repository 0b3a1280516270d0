"""The SAM translation is made once per template text, parameters and Region
(devstack.cloudformation.template.expand), and every caller still gets a template of its own."""

from __future__ import annotations

import gc
import logging
import textwrap
from pathlib import Path

import pytest

from devstack.cloudformation.template import expand
from devstack.errors import DeployError

SAM = textwrap.dedent(
    """\
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      Greeting:
        Type: String
        Default: hello
    Resources:
      Fn:
        Type: AWS::Serverless::Function
        Properties:
          CodeUri: code/
          Handler: app.handler
          Runtime: python3.13
          Environment:
            Variables:
              GREETING: !Ref Greeting
    Outputs:
      FnName:
        Value: !Ref Fn
    """
)


def sam_template(directory: Path, text: str = SAM) -> Path:
    (directory / "code").mkdir(exist_ok=True)
    path = directory / "template.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_each_caller_gets_a_template_of_its_own(tmp_path: Path) -> None:
    path = sam_template(tmp_path)
    first = expand(path, {"Greeting": "hi"}, "us-east-1")
    # WHEN a caller changes what it got (the deployer resolves and fills in its copy)
    first.template["Resources"].clear()
    first.template["Outputs"]["FnName"] = "changed"
    # THEN the next caller gets the translation as it was
    second = expand(path, {"Greeting": "hi"}, "us-east-1")
    assert "Fn" in second.template["Resources"]
    assert second.template["Outputs"]["FnName"] == {"Value": {"Ref": "Fn"}}
    assert second.code_uris == {"Fn": (tmp_path / "code").resolve()}


def test_a_changed_template_is_translated_again(tmp_path: Path) -> None:
    path = sam_template(tmp_path)
    before = expand(path, {}, "us-east-1").template
    # WHEN the template changes on disk, THEN the change is in the next translation
    sam_template(tmp_path, SAM.replace("Handler: app.handler", "Handler: app.other"))
    after = expand(path, {}, "us-east-1").template
    assert before["Resources"]["Fn"]["Properties"]["Handler"] == "app.handler"
    assert after["Resources"]["Fn"]["Properties"]["Handler"] == "app.other"
    # ... and its code directories are checked each time, translated before or not
    (tmp_path / "code").rmdir()
    with pytest.raises(DeployError, match="CodeUri"):
        expand(path, {}, "us-east-1")


def test_translating_leaves_no_warning_behind(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a translation, and another that replaces the translator's usage metrics with its own
    # (what earlier tests of this worker process left is collected first: a translator object
    # they left unpublished is not this translation's)
    gc.collect()
    path = sam_template(tmp_path, SAM.replace("hello", "warning-test"))
    with caplog.at_level(logging.DEBUG):
        expand(path, {"Greeting": "one"}, "us-east-1")
        expand(path, {"Greeting": "two"}, "us-east-1")
        # WHEN what the first left is collected
        gc.collect()
    # THEN nothing the user reads warns about metrics nobody published
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in warned if "unpublished metrics" in m], warned
