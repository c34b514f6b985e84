"""What each finishing stage of a bank is worth: the bank's figures with one stage turned off at a time.

    python benchmarks/stages.py --data path/to/voc2012 [--bank checkpoints/voc] [--limit N] [--json out.json]

Each variant is a copy of the bank whose manifest turns one stage off in every repair mode (the guided
filter, the colour evidence, the learned background bias, the boundary refiner's second pass or both
passes); the erasure finder is turned off by repair's own switch. Each is scored by
`repair_quality.py --no-crf` (mIoU over the damaged pixels, the share of undamaged pixels blind repair
changed) and by `labelfix bench` (PA-mIoU, `--policy replace`), all else equal.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from labelfix.bank.manifest import Manifest
from labelfix.bank.store import resolve_bank_path
from labelfix.bench.evaluate import BenchSettings, bench

HERE = Path(__file__).resolve().parent

# stage -> how its manifest turns it off (None: repair's --no-erasures)
STAGES = {
    "none": lambda m: m,  # the bank itself
    "guided filter": lambda m: m.updated(finishing={k: replace(f, guided=False) for k, f in m.finishing.items()}),
    "colour evidence": lambda m: m.updated(finishing={k: replace(f, colour=0.0) for k, f in m.finishing.items()}),
    "learned background bias": lambda m: m.updated(finishing={k: replace(f, extent=0.0)
                                                              for k, f in m.finishing.items()}),
    "refiner's second pass": lambda m: m.updated(refiner_second=None),
    "refiner, both passes": lambda m: m.updated(refiner=None, refiner_second=None),
    "erasure finder": None,
}


def variant(bank: Path, stage: str, folder: Path) -> Path:
    """A copy of `bank` with `stage` off."""
    out = folder / stage.replace(" ", "-").replace("'", "")
    shutil.copytree(bank, out)
    STAGES[stage](Manifest.read(out)).write(out)
    return out


def quality(data: str, bank: Path, limit: int | None, no_erasures: bool, json_path: Path) -> list[dict]:
    cmd = [sys.executable, str(HERE / "repair_quality.py"), "--data", data, "--bank", str(bank), "--no-crf",
           "--json", str(json_path)] + (["--limit", str(limit)] if limit else []) \
        + (["--no-erasures"] if no_erasures else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(json_path.read_text())["rows"]


def paper_protocol(data: str, bank: Path, limit: int | None) -> list[float]:
    result = bench(BenchSettings(data=Path(data), bank=str(bank), limit=limit, crf=False, speed=False))
    return [round(r["pa_miou"], 1) for r in result.rows if r["method"] == "labelfix"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--bank", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    bank = resolve_bank_path(a.bank)
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stage, turn_off in STAGES.items():
            folder = bank if stage == "none" or turn_off is None else variant(bank, stage, Path(tmp))
            rows = quality(a.data, folder, a.limit, turn_off is None, Path(tmp) / "quality.json")
            cells = {r["case"]: (round(r["labelfix"], 1), r.get("undamaged_changed_pct")) for r in rows}
            # the erasure finder works in blind repair only, which the paper's protocol does not run
            pa = paper_protocol(a.data, folder, a.limit) if turn_off is not None else table["none"]["pa_miou"]
            table[stage] = {"quality": cells, "pa_miou": pa}
            print(f"{stage:24s} " + "  ".join(f"{c} {v}" + (f" ({p}%)" if p is not None else "")
                                             for c, (v, p) in cells.items())
                  + f"  PA-mIoU {table[stage]['pa_miou']}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
