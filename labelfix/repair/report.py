"""The report of a repair (report.json, report.csv) and the merge of shards' reports."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, fields
from pathlib import Path

from .. import __version__
from ..bank.store import Bank
from ..errors import UsageError
from ..files import write_atomic
from .outfolder import REPORT_FORMAT
from .settings import ImageRow, RepairSettings

REPORT_COLUMNS = ("file", "status", "background_fraction", "ratio", "patches_removed", "erased_pixels",
                  "orphaned_outline", "objects_filled", "pixels_changed", "classes_added", "mean_confidence",
                  "needs_review", "review_reason", "seconds", "error")


def totals_of(rows: list[ImageRow], seconds: float, resumed: int = 0) -> dict:
    """What the rows add up to; `resumed` of them an earlier run finished (their rows from its journal)."""
    worked = len(rows) - resumed - sum(r.status == "failed" for r in rows)
    return {
        "files": len(rows),
        "repaired": sum(r.status == "repaired" for r in rows),
        "unchanged": sum(r.status == "unchanged" for r in rows),
        "failed": sum(r.status == "failed" for r in rows),
        "needs_review": sum(bool(r.needs_review) for r in rows),
        "pixels_changed": sum(r.pixels_changed for r in rows),
        "resumed": resumed,
        "seconds": round(seconds, 3),
        "images_per_s": round(worked / seconds, 3) if seconds > 0 and worked > 0 else 0.0,
    }


def report_name(s: RepairSettings) -> str:
    return "report" if s.shard is None else f"report.shard-{s.shard[0]}-of-{s.shard[1]}"


def write_report(out: Path, s: RepairSettings, bank: Bank, rows: list[ImageRow], totals: dict,
                 runtime: dict | None = None) -> Path:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()}
    report = {
        "format": REPORT_FORMAT,
        "labelfix_version": __version__,
        "settings": settings,
        "bank": {"path": str(bank.path), "manifest_sha256": bank.manifest_sha256, "ratios": bank.ratios},
        "runtime": runtime or {},  # the device and model precision this run used
        "totals": totals,
        "rows": [asdict(r) for r in rows],
    }
    name = report_name(s)
    write_atomic(out / f"{name}.json", (json.dumps(report, indent=2) + "\n").encode())
    write_atomic(out / f"{name}.csv", _csv_bytes(rows))
    return out / f"{name}.json"


def csv_cell(value) -> str | float | int:
    """A report value as a CSV cell that a spreadsheet shows and does not evaluate: text that starts like a
    formula (=, +, -, @, a tab or a carriage return) gets a leading apostrophe, as OWASP advises."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_bytes(rows) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=REPORT_COLUMNS)
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(v) for k, v in (asdict(r) if not isinstance(r, dict) else r).items()
                    if k in REPORT_COLUMNS})
    return buf.getvalue().encode()


def report_rows(report: dict) -> list[ImageRow]:
    return [ImageRow(**{k: r.get(k) for k in (f.name for f in fields(ImageRow))}) for r in report["rows"]]


def merge_reports(out: Path) -> Path:
    """Join the shard reports of one output folder into report.json and report.csv, and preview.html if the
    shards drew pictures (--preview)."""
    out = Path(out)
    parts = sorted(out.glob("report.shard-*-of-*.json"))
    if not parts:
        raise UsageError(f"{out}: no shard reports (report.shard-I-of-N.json) to merge")
    by_file, first, drew, seconds = {}, None, False, 0.0
    for p in sorted(parts, key=lambda p: p.stat().st_mtime_ns):  # a file's newest row wins: parts of an
        d = json.loads(p.read_text())                            # earlier run in other shards may linger
        first = first or d
        by_file.update((r["file"], r) for r in d["rows"])
        drew |= bool(d["settings"].get("preview")) and not d["settings"].get("dry_run")
        seconds = max(seconds, d["totals"]["seconds"])
    rows = sorted(by_file.values(), key=lambda r: r["file"])
    objs = report_rows({"rows": rows})
    report = dict(first)
    report["settings"] = dict(first["settings"], shard=None)
    report["shards"] = [p.name for p in parts]
    report["totals"] = totals_of(objs, seconds)
    report["rows"] = rows
    write_atomic(out / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    write_atomic(out / "report.csv", _csv_bytes(objs))
    if drew:  # the shards drew pictures: one page for them all
        from .preview import write_preview_page
        write_preview_page(out, objs)
    return out / "report.json"
