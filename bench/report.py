"""The figures of one run: a table on the terminal, the same rows in bench/results/latest.json."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.project import REPO

RESULTS = REPO / "bench" / "results"


@dataclass
class Row:
    """One line of the table: a figure (median of its samples), its baseline, its target."""

    scenario: str
    measure: str
    figure: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""
    samples: list[float] = field(default_factory=list)
    baseline_samples: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.figure is None or not self.baseline:
            return None
        return self.figure / self.baseline


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank: an observed value, never interpolated."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    shown = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{shown} {unit}".strip()


def _verdict(met: bool | None) -> str:
    return {True: "[green]yes[/green]", False: "[red]NO[/red]", None: ""}[met]


def print_table(rows: list[Row], *, title: str, console: Console | None = None) -> None:
    table = Table(title=title, title_justify="left", show_lines=False)
    for name, justify in (
        ("scenario", "left"),
        ("measure", "left"),
        ("figure", "right"),
        ("baseline", "right"),
        ("ratio", "right"),
        ("target", "left"),
        ("met", "center"),
        ("note", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        baseline = _number(row.baseline, row.unit)
        if row.baseline_name and row.baseline is not None:
            baseline = f"{baseline} ({row.baseline_name})"
        ratio = row.ratio
        table.add_row(
            row.scenario,
            row.measure,
            _number(row.figure, row.unit),
            baseline,
            "—" if ratio is None else f"{ratio:.2f}×",
            row.target,
            _verdict(row.met),
            row.note,
        )
    (console or Console(width=200)).print(table)


def _git(*args: str) -> str:
    try:
        found = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return found.stdout.strip()


def write_json(rows: list[Row], *, path: Path, options: dict[str, Any]) -> None:
    """The same rows, with their samples and the machine they were measured on."""
    document = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": options,
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "git": {"commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain"))},
        "rows": [asdict(row) | {"ratio": row.ratio} for row in rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
