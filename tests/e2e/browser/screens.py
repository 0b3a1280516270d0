"""Every screen a journey reaches: a screenshot, and axe-core's check run in the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# What counts as failing the check (axe-core's impact levels; "minor" and "moderate" do not).
FAILING_IMPACTS = ("serious", "critical")


class Screens:
    def __init__(self, page: Any, directory: Path, axe: Path) -> None:
        self.page = page
        self.directory = directory
        self.axe_source = axe.read_text(encoding="utf-8")
        self.taken: list[Path] = []
        directory.mkdir(parents=True, exist_ok=True)

    def check(self, name: str) -> Path:
        """Screenshot the page as ``NN-name.png`` and assert axe-core finds no serious or
        critical violation on it. axe is evaluated through DevTools, which the page's CSP
        (no inline script) does not govern, so the check runs under the page's real policy."""
        path = self.directory / f"{len(self.taken) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        if not self.page.evaluate("() => typeof window.axe === 'object'"):
            self.page.evaluate(self.axe_source)
        violations = self.page.evaluate(
            """async () => {
                const results = await window.axe.run(document, {resultTypes: ["violations"]});
                return results.violations.map((v) => ({
                    id: v.id, impact: v.impact, help: v.help,
                    targets: v.nodes.map((n) => n.target.join(" ")),
                }));
            }"""
        )
        failing = [v for v in violations if v["impact"] in FAILING_IMPACTS]
        assert not failing, f"{name}: axe-core found {failing} (screenshot {path})"
        return path
