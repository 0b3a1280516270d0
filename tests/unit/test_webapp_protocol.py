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


WEBAPP = ROOT / "webapp"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: `apt-get install -y nodejs` (Debian) runs these tests")
    return node


def test_every_script_of_the_page_parses() -> None:
    """app.js (the DOM, not run under node) and sw.js included: a syntax error in either
    would blank the page or stop it installing."""
    node = _node()
    for path in sorted((WEBAPP / "js").glob("*.js")):
        run = subprocess.run(  # noqa: S603 - node from PATH, files of this repo
            [node, "--input-type=module", "--check"],
            input=path.read_text(encoding="utf-8"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, f"{path.name}: {run.stderr[-1000:]}"
    run = subprocess.run(  # noqa: S603 - node from PATH, a file of this repo
        [node, "--check", str(WEBAPP / "sw.js")], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr[-1000:]


def test_the_page_has_no_inline_script_or_style_and_every_id_app_js_uses() -> None:
    html = (WEBAPP / "index.html").read_text(encoding="utf-8")
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp and "script-src 'self';" in csp.group(1) and "unsafe-inline" not in csp.group(1)
    assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html)
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", html))
    ids = set(re.findall(r'\sid="([^"]+)"', html))
    used = set(re.findall(r'\$\("([^"]+)"\)', (WEBAPP / "js" / "app.js").read_text("utf-8")))
    assert used and used <= ids, f"app.js uses ids the page lacks: {sorted(used - ids)}"


def test_the_service_worker_caches_every_shell_file_and_nothing_else() -> None:
    sw = (WEBAPP / "sw.js").read_text(encoding="utf-8")
    shell = set(re.findall(r'"\./([^"]*)"', sw)) - {""}
    files = {
        str(p.relative_to(WEBAPP))
        for p in WEBAPP.rglob("*")
        if p.is_file() and p.name not in ("README.md", "sw.js")
    }
    assert shell == files
    assert "config.json" not in sw.split("const SHELL")[1]
