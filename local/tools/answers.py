"""The parameter overrides ``make deploy`` hands ``sam deploy``, answers file included.

    python -m tools.answers [--config-env ENV] [Key=Value ...]

``sam deploy --parameter-overrides`` replaces a samconfig environment's ``parameter_overrides``
rather than adding to them, so this merges, in order (the later wins): config.json's values
(``make params``), the environment's ``parameter_overrides`` in samconfig.toml (``first`` holds
the answers for a first deploy), then the Key=Value items. It prints them as ``make params``
does.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from tools import params

ROOT = Path(__file__).resolve().parents[2]
SAMCONFIG = ROOT / "samconfig.toml"


def samconfig_overrides(env: str, path: Path = SAMCONFIG) -> dict[str, str]:
    """The ``parameter_overrides`` of ``[ENV.deploy.parameters]`` (a string or a list)."""
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise params.ConfigError(f"{path}: cannot read: {exc}") from exc
    if env not in config:
        known = ", ".join(sorted(config.keys() - {"version"}))
        raise params.ConfigError(f"{path} has no environment [{env}] (it has: {known})")
    deploy = config[env].get("deploy", {}).get("parameters", {})
    items = deploy.get("parameter_overrides", [])
    return params.parse_overrides(shlex.split(items) if isinstance(items, str) else list(items))


def samconfig_stack_name(env: str, path: Path = SAMCONFIG) -> str | None:
    try:
        section = tomllib.loads(path.read_text(encoding="utf-8")).get(env, {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    for command in ("deploy", "global"):
        name = section.get(command, {}).get("parameters", {}).get("stack_name")
        if name:
            return str(name)
    return None


def resolve(
    env: str, items: Sequence[str], config: Path | None = params.DEFAULT_CONFIG
) -> dict[str, str]:
    answers = samconfig_overrides(env)
    return params.resolve_parameters(config, {**answers, **params.parse_overrides(list(items))})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.answers",
        description=(
            "Print config.json's values, a samconfig environment's parameter_overrides and "
            "Key=Value items, merged, as `sam deploy --parameter-overrides` items."
        ),
    )
    parser.add_argument("overrides", nargs="*", metavar="Key=Value", help="explicit overrides")
    parser.add_argument("--config-env", default="default", help="samconfig.toml environment")
    args = parser.parse_args(argv)
    try:
        parameters = resolve(args.config_env, args.overrides)
    except params.ConfigError as exc:
        print(f"answers: {exc}", file=sys.stderr)
        return 2
    print(params.format_overrides(parameters))
    return 0


if __name__ == "__main__":
    sys.exit(main())
