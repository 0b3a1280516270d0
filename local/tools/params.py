"""Template parameter overrides from ``provisioning_lambda/config.json``.

    .venv/bin/python -m tools.params [--config FILE | --no-config] [--raw] [Key=Value ...]

config.json keeps the original sample's keys so an operator's existing file still works; it
is read at deploy time only (by ``sam deploy`` through ``make params``, and by the offline
stack), never by the Lambda at run time.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("provisioning_lambda/config.json")

_SAM_BARE = re.compile(r'[^\s"\\]+')
_SUBJECT = {
    "CN": "CaCommonName",
    "O": "CaOrganization",
    "OU": "CaOrganizationalUnit",
    "L": "CaLocality",
    "ST": "CaState",
    "C": "CaCountry",
}


# The keys the original sample's config.json has. Its file spells the CA validity
# ``validity`` while its README says ``Validity``: both are accepted.
_TOP_KEYS = ("certificate", "iot")
_CERTIFICATE_KEYS = ("subject", "Validity", "validity")
_IOT_KEYS = ("certValidity", "thingPrefix", "thingGroup")


class ConfigError(ValueError):
    """config.json is missing, not JSON, has an unknown key or a value of the wrong type, or an
    override is not Key=Value: a mistake the user can fix, told in one line."""


def _check_keys(data: dict[str, Any], known: tuple[str, ...], where: str, path: Path) -> None:
    """An unknown (often misspelt) key is an error naming it, never a setting dropped quietly."""
    for key in data:
        if key in known:
            continue
        lowered: dict[str, str] = {}
        for name in known:  # the first spelling listed is the one suggested
            lowered.setdefault(name.lower(), name)
        close = difflib.get_close_matches(str(key).lower(), list(lowered), n=1, cutoff=0.6)
        hint = f"; did you mean {where}{lowered[close[0]]!r}?" if close else ""
        allowed = ", ".join(sorted(set(known), key=str.lower))
        raise ConfigError(f"{path}: unknown key {where}{key!r} (known: {allowed}){hint}")


def _section(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{key}' must be an object, got {type(value).__name__}")
    return value


def _text(value: Any, where: str, path: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: {where} must be a non-empty string, got {value!r}")
    return value


def _whole_years(value: Any, where: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ConfigError(f"{path}: {where} must be a whole number of years, got {value!r}")
    if value < 1:
        raise ConfigError(f"{path}: {where} must be at least 1 year, got {value!r}")
    return int(value)


def config_parameters(path: Path = DEFAULT_CONFIG) -> dict[str, str]:
    """Map config.json's keys onto the template's parameter names."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a JSON object")

    result: dict[str, str] = {}
    _check_keys(data, _TOP_KEYS, "", path)
    certificate = _section(data, "certificate", path)
    _check_keys(certificate, _CERTIFICATE_KEYS, "certificate.", path)
    subject = _section(certificate, "subject", path)
    _check_keys(subject, tuple(_SUBJECT), "certificate.subject.", path)
    for key, parameter in _SUBJECT.items():
        if key in subject:
            result[parameter] = _text(subject[key], f"certificate.subject.{key}", path)
    spellings = [key for key in ("Validity", "validity") if key in certificate]
    if len(spellings) > 1:
        raise ConfigError(
            f"{path}: certificate.Validity and certificate.validity are the same setting; keep one"
        )
    if spellings:
        where = f"certificate.{spellings[0]}"
        result["CaValidityYears"] = str(_whole_years(certificate[spellings[0]], where, path))

    iot = _section(data, "iot", path)
    _check_keys(iot, _IOT_KEYS, "iot.", path)
    if "certValidity" in iot:
        years = _whole_years(iot["certValidity"], "iot.certValidity", path)
        result["DeviceCertValidityDays"] = str(years * 365)
    if "thingPrefix" in iot:
        result["ThingPrefix"] = _text(iot["thingPrefix"], "iot.thingPrefix", path)
    if "thingGroup" in iot:
        result["ThingGroupName"] = _text(iot["thingGroup"], "iot.thingGroup", path)
    return result


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["Key=Value", ...]`` (the --parameter-overrides shape) into a dict."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"parameter override {item!r} is not Key=Value")
        result[key] = value
    return result


def resolve_parameters(
    config: Path | None = DEFAULT_CONFIG, overrides: dict[str, str] | None = None
) -> dict[str, str]:
    """config.json's values, then explicit overrides on top (they win)."""
    result = config_parameters(config) if config is not None else {}
    result.update(overrides or {})
    return result


def sam_token(key: str, value: str) -> str:
    """One ``--parameter-overrides`` item as SAM CLI parses it: ``Key=Value`` or
    ``Key="Value with spaces"`` (SAM's own quoting, with backslash escapes)."""
    if value and _SAM_BARE.fullmatch(value):
        return f"{key}={value}"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{key}="{escaped}"'


def format_overrides(parameters: dict[str, str], *, shell: bool = True) -> str:
    """The overrides for ``sam deploy --parameter-overrides``.

    ``shell=True`` quotes each item once more for a shell command line (a Makefile recipe
    with ``$(shell python -m tools.params)``), so SAM still sees its own double quotes.
    """
    quote: Callable[[str], str] = shlex.quote if shell else str
    return " ".join(quote(sam_token(key, value)) for key, value in parameters.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=".venv/bin/python -m tools.params",
        description=(
            "Turn provisioning_lambda/config.json (the original sample's keys) into "
            "`sam deploy --parameter-overrides` items. Explicit Key=Value items win."
        ),
    )
    parser.add_argument("overrides", nargs="*", metavar="Key=Value", help="explicit overrides")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="path of config.json")
    parser.add_argument("--no-config", action="store_true", help="ignore config.json")
    parser.add_argument(
        "--raw", action="store_true", help="do not shell-quote the items (SAM's own syntax only)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Print the overrides; a config.json or override the user can fix is one line on stderr
    and status 2."""
    args = build_parser().parse_args(argv)
    config = None if args.no_config else Path(args.config)
    try:
        parameters = resolve_parameters(config, parse_overrides(args.overrides))
    except ConfigError as exc:
        print(f"params: {exc}", file=sys.stderr)
        return 2
    print(format_overrides(parameters, shell=not args.raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
