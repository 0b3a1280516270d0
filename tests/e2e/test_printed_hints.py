"""Every command the project prints for a user to paste runs as printed.

What `up` prints (its banner), what the "not up" and "already up" errors and `down` print, and
the usage line of every `--help`: each is run verbatim by `bash` from the root of a directory
like a fresh clone (links to this checkout and its .venv, no .local state), with no PYTHONPATH
and no virtualenv activated, as a user who ran `make venv` and pasted the line would run it.
A hint that stops working fails here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from devstack import hints
from devstack.cli import build_parser
from tests.e2e.conftest import ROOT
from tests.e2e.test_readme_walkthrough import clean_env, tracked_top_level

pytestmark = pytest.mark.e2e

HINT = re.compile(r"`([^`]+)`")  # a command to paste is printed between backquotes
USAGE = re.compile(r"^usage: (.+?)\s+\[-h\]", re.MULTILINE)  # argparse may wrap after it


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A directory like a fresh clone of this checkout after `make venv`: no .local in it."""
    home = tmp_path / "clone"
    home.mkdir()
    for name in sorted(tracked_top_level() | {".venv"}):
        (home / name).symlink_to(ROOT / name)
    return home


def shell(command: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the project's own printed commands
        ["bash", "-c", command],  # noqa: S607
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def hints_in(text: str) -> list[str]:
    return HINT.findall(text)


# -- the installed command -----------------------------------------------------------------


def test_make_venv_installed_the_devstack_command_of_this_checkout(clone: Path) -> None:
    assert (ROOT / hints.COMMAND).exists(), f"no {hints.COMMAND}: run `make venv`"
    found = shell(
        ".venv/bin/python -c 'import devstack, onboarding_ble, tools; print(devstack.__file__)'",
        clone,
    )
    assert found.returncode == 0, found.stderr
    # the editable install points at this checkout's code (`make venv` re-points it)
    assert Path(found.stdout.strip()) == ROOT / "local" / "devstack" / "__init__.py", (
        "the virtualenv's devstack is another checkout's: run `make venv` here"
    )


def test_hints_know_where_the_state_file_is_by_default() -> None:
    # A hint leaves --state out for the default state file only: the one `up` and the example's
    # processes use when not told otherwise.
    from devstack import stack
    from onboarding_ble import offline

    assert hints.DEFAULT_STATE == stack.DEFAULT_STATE == offline.DEFAULT_STATE
    assert hints.command("up", state=stack.DEFAULT_STATE) == ".venv/bin/devstack up"
    assert hints.command("down", state="/tmp/my stack.json") == (
        ".venv/bin/devstack down --state '/tmp/my stack.json'"
    )


# -- usage lines ----------------------------------------------------------------------------


def _usage(
    main: Callable[[list[str]], object], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> str:
    """The command a tool's `--help` prints on its usage line (what precedes `[-h]`)."""
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    printed = USAGE.search(capsys.readouterr().out)
    assert printed, f"{argv}: no usage line"
    return printed.group(1)


def _devstack_commands(parser: object, words: list[str]) -> list[list[str]]:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    found = [words]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _devstack_commands(sub, [*words, name])
    return found


def test_every_usage_line_runs_as_printed(clone: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import device
    import provisioning_app

    import demo
    from devstack.cli import main as devstack_main
    from onboarding_ble import keytool, radio
    from tools import deploy_safety, params

    # GIVEN each program's usage line, and its commands' (each devstack command, each script)
    programs: dict[str, tuple[Callable[[list[str]], object], list[list[str]]]] = {
        hints.COMMAND: (devstack_main, _devstack_commands(build_parser(), [])),
        ".venv/bin/python example/device.py": (device.main, [[]]),
        ".venv/bin/python example/provisioning_app.py": (
            provisioning_app.main,
            [[], ["list"], ["transfer"], ["claim"], ["release"]],
        ),
        ".venv/bin/python example/demo.py": (demo.main, [[]]),
        ".venv/bin/python -m onboarding_ble.keytool": (keytool.main, [[], ["new"], ["open"]]),
        ".venv/bin/python -m onboarding_ble.radio": (radio.main, [[]]),
        ".venv/bin/python -m tools.params": (params.main, [[]]),
        ".venv/bin/python -m tools.deploy_safety": (deploy_safety.main, [[]]),
    }
    for program, (tool_main, commands) in programs.items():
        for words in commands:
            # ... which is the program followed by the command's words: what runs it
            assert _usage(tool_main, words, capsys) == " ".join([program, *words])
    assert len(programs[hints.COMMAND][1]) >= 12

    # ... and the benchmarks' (their usage lines are checked in their own output only)
    benches = ("", ".load", ".herd", ".fleet", ".disconnect")
    benchmarks = [f".venv/bin/python -m bench{name}" for name in benches]

    # WHEN each program's line is pasted into a shell at the clone's root, with --help (all at
    # once: each is a Python start-up)
    running = {
        program: subprocess.Popen(  # noqa: S603 - the printed commands
            ["bash", "-c", f"{program} --help"],  # noqa: S607
            cwd=clone,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for program in [*programs, *benchmarks]
    }
    # THEN each runs, and prints the same usage line: the command it names is itself
    failed = {}
    for program, process in running.items():
        out, err = process.communicate(timeout=120)
        usage = USAGE.match(out)
        if process.returncode != 0 or not usage or usage.group(1) != program:
            failed[program] = f"exit {process.returncode}: {(err or out)[-300:]}"
    assert failed == {}


def test_fleet_commands_script_prints_its_help_and_a_usage_line_that_runs(clone: Path) -> None:
    # GIVEN example/fleet_commands.py, run as a script as its file name invites
    done = shell(".venv/bin/python example/fleet_commands.py --help", clone)
    # THEN it prints the fleet commands' help, whose usage line is the app's command
    assert done.returncode == 0, done.stderr
    assert "{list,transfer,claim,release,user}" in done.stdout
    printed = USAGE.search(done.stdout)
    assert printed and printed.group(1) == ".venv/bin/python example/provisioning_app.py"
    again = shell(f"{printed.group(1)} list --help", clone)
    assert again.returncode == 0 and again.stdout.startswith(f"usage: {printed.group(1)} list")


# -- up, its banner, the errors around it, down -------------------------------------------


def _wait_for_text(path: Path, wanted: str, process: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        if wanted in text:
            return text
        if process.poll() is not None:
            break
        time.sleep(0.2)
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    raise AssertionError(f"{wanted!r} never came (exit {process.poll()}): {text[-2000:]}")


def _started(command: str, cwd: Path, log: Path) -> subprocess.Popen[str]:
    with log.open("w") as out:
        return subprocess.Popen(  # noqa: S603 - a printed command
            ["bash", "-c", command],  # noqa: S607
            cwd=cwd,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_up_down_and_their_errors_print_commands_that_run(clone: Path, tmp_path: Path) -> None:
    state = clone / ".local" / "stack.json"

    # GIVEN nothing up: `make down` and `down` say so in one line, and succeed
    for command in ("make down", f"{hints.COMMAND} down"):
        done = shell(command, clone)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("\n") == 1 and "nothing to stop" in done.stdout, done.stdout
    # ... and a command that needs the stack names the one that starts it
    refused = shell(f"{hints.COMMAND} login admin", clone)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "not up" in refused.stderr
    assert hints_in(refused.stderr) == [f"{hints.COMMAND} up"]

    # WHEN that command is pasted (in a first terminal: it runs until stopped)
    up_log = tmp_path / "up.log"
    up = _started(hints_in(refused.stderr)[0], clone, up_log)
    follow: subprocess.Popen[str] | None = None
    try:
        banner = _wait_for_text(up_log, "stops it.", up, timeout=240)
        # THEN the stack is up where its banner says, and the banner shows no password
        recorded = json.loads(state.read_text())
        assert recorded["api_url"] in banner
        assert f"{recorded['mqtt']['host']}:{recorded['mqtt']['port']}" in banner
        assert recorded["admin"]["password"] not in banner
        # ... with the phone app's URL, which serves the page and this stack's config.json
        assert recorded["app_url"].startswith("http://127.0.0.1:")
        assert f"phone app      {recorded['app_url']}" in banner
        with urllib.request.urlopen(recorded["app_url"] + "config.json", timeout=10) as answer:  # noqa: S310
            assert json.loads(answer.read())["apiUrl"] == recorded["api_url"]
        printed = hints_in(banner)
        browser, login, logs, make_down, down = (
            hints.browser(),
            f"{hints.COMMAND} login admin",
            f"{hints.COMMAND} logs --follow",
            "make down",
            f"{hints.COMMAND} down",
        )
        assert printed == [browser, login, logs, make_down, down], banner

        # ... its browser hint starts Chromium on the app, bridged to a radio, until Ctrl-C
        # (headless: this machine has no $DISPLAY)
        browser_log = tmp_path / "browser.log"
        opened = _started(browser, clone, browser_log)
        _wait_for_text(browser_log, "Ctrl-C stops the browser", opened, timeout=60)
        assert recorded["app_url"] in browser_log.read_text()
        os.killpg(opened.pid, signal.SIGINT)
        # THEN it stops quietly (exit 0, or by SIGINT as a Ctrl-C'd command may: both are
        # usual for a shell) and leaves no browser behind
        assert opened.wait(30) in (0, -signal.SIGINT), browser_log.read_text()
        said = browser_log.read_text()
        assert "Traceback" not in said and "stopped the browser" in said, said
        profile = re.search(r"fresh profile (\S+)\)", said)
        assert profile, said
        left = subprocess.run(  # noqa: S603
            ["pgrep", "-f", profile.group(1)],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
        assert left.stdout == "", left.stdout

        # ... its login hint prints an ID token (a JWT: header.payload.signature)
        token = shell(login, clone)
        assert token.returncode == 0, token.stderr
        assert token.stdout.strip().count(".") == 2

        # ... its logs hint follows the stack's logs (each line named by its log) until Ctrl-C
        follow_log = tmp_path / "follow.log"
        follow = _started(logs, clone, follow_log)
        _wait_for_text(follow_log, "devstack| ", follow, timeout=30)
        os.killpg(follow.pid, signal.SIGINT)
        assert follow.wait(10) == 0

        # ... starting it again is refused, naming the commands that stop the running one
        again = shell(hints_in(refused.stderr)[0], clone)
        assert again.returncode == 2 and "already up" in again.stderr, again.stderr
        assert hints_in(again.stderr) == [make_down, down]

        # WHEN the banner's `make down` is pasted in a second terminal
        stopped = shell(make_down, clone)
        # THEN the stack stops cleanly and its state file is gone
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "stopped" in stopped.stdout
        assert up.wait(30) == 0
        assert "offline stack stopped" in up_log.read_text()
        assert not state.exists()
        # ... and its other stop command, now with nothing up, says so and succeeds
        after = shell(down, clone)
        assert after.returncode == 0 and "nothing to stop" in after.stdout
    finally:
        if follow is not None:
            _stop(follow)
        _stop(up)
