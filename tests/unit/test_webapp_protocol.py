"""The web app's protocol constants (webapp/js/protocol.js) are what local/tools/webapp_protocol.py
makes from the Python protocol, and the app's pure modules (framing, CRC-32, chunking, STATUS,
the answer it relays) reproduce docs/test-vectors/ byte for byte under node (tests/unit/js/)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from onboarding_ble import protocol, rules
from tools import webapp_protocol

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_JS = ROOT / "webapp" / "js" / "protocol.js"
JS_TESTS = ROOT / "tests" / "unit" / "js"


def test_committed_protocol_js_is_what_the_generator_makes() -> None:
    assert PROTOCOL_JS.read_text(encoding="utf-8") == webapp_protocol.render(), (
        "webapp/js/protocol.js is stale: run `make webapp-protocol`"
    )


def test_check_fails_on_a_stale_file_and_passes_on_a_fresh_one(tmp_path: Path) -> None:
    # GIVEN a protocol.js with one UUID changed, as after an edit to protocol.py
    stale = tmp_path / "protocol.js"
    stale.write_text(
        webapp_protocol.render().replace(protocol.STATUS_UUID, "0" * 36), encoding="utf-8"
    )
    # THEN --check refuses it, and accepts what the generator writes
    assert webapp_protocol.main(["--out", str(stale), "--check"]) == 1
    assert webapp_protocol.main(["--out", str(stale)]) == 0
    assert webapp_protocol.main(["--out", str(stale), "--check"]) == 0
    assert webapp_protocol.main(["--out", str(tmp_path / "missing.js"), "--check"]) == 1


def test_protocol_js_names_every_status_opcode_and_uuid() -> None:
    text = PROTOCOL_JS.read_text(encoding="utf-8")
    for status in protocol.Status:
        assert f"  {status.name}: 0x{int(status):02x}," in text
    for opcode in protocol.Opcode:
        assert f"  {opcode.name}: 0x{int(opcode):02x}," in text
    uuids = {v for k, v in vars(protocol).items() if k.endswith("_UUID")}
    assert uuids == set(re.findall(r'"([0-9a-f-]{36})"', text))
    assert f'export const DSN_RULE = "{rules.DSN_RULE}";' in text


def test_the_web_app_pure_modules_pass_their_node_tests() -> None:
    """tests/unit/js/*.test.mjs: the vectors through wire.js and the whole onboarding flow
    (onboard.js) against a scripted device, with node's own test runner (no npm package)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: `apt-get install -y nodejs` (Debian) runs these tests")
    tests = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))
    assert tests, "no JavaScript tests found"
    run = subprocess.run(  # noqa: S603 - node from PATH, test files of this repo
        [node, "--test", *tests], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.search(r"# fail 0\b", run.stdout), run.stdout[-2000:]
