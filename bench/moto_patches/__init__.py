"""Patches of moto's internals that only the load test needs (``make load``, ``bench.load``).

moto repeats work on every request that AWS does not (``costs``) and scans where AWS looks up
by key (``lookups``). Neither changes an answer; with a thousand devices registered they
decide what the load test measures, so ``bench.load`` applies them before it starts the stack.
Nothing else does: the offline stack and the tests run moto as it is, apart from the bridges of
real differences from AWS (devstack.moto_bridges).

Each patch replaces private code of one moto release, the one requirements-dev.txt pins, and
refuses to apply to another (``require_moto``): check each patch against the new release's
code, then change its ``MOTO_VERSION``.
"""

from __future__ import annotations

from importlib.metadata import version


class MotoVersionError(RuntimeError):
    """The installed moto is not the release a patch was written for."""


def require_moto(patched: str, patch: str) -> None:
    """Raise unless the installed moto is release ``patched``, the one ``patch`` replaces code
    of."""
    installed = version("moto")
    if installed != patched:
        raise MotoVersionError(
            f"{patch} patches moto {patched}'s internals, but moto {installed} is installed: "
            f"check each patch in {patch} against moto {installed}'s code, then set its "
            "MOTO_VERSION to it"
        )
