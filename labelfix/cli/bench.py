from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import UsageError
from ..files import write_atomic
from ._common import console, flag, handle_errors, parse_floats, results


@handle_errors
def bench(
    data: Path = typer.Option(..., "--data", metavar="DIR", show_default=False,
                              help="Dataset folder (VOC or generic layout)."),
    bank: Optional[str] = typer.Option(None, "--bank", metavar="DIR|hf://ORG/REPO", show_default=False,
                                       help="Model bank (default: the bundled VOC bank)."),
    split: str = typer.Option("val", "--split", metavar="NAME"),
    metric: str = typer.Option("pa-miou", "--metric", metavar="pa-miou|miou|all"),
    ratios: Optional[str] = typer.Option(None, "--ratios", metavar="R[,R]", show_default=False,
                                         help="Mask ratios to test (default: the bank's)."),
    strategy: str = typer.Option("background-first", "--strategy", metavar="NAME",
                                 help="background-first, random or label-first."),
    limit: Optional[int] = typer.Option(None, "--limit", metavar="N", show_default=False,
                                        help="Use only the first N images of the split."),
    skip: int = typer.Option(0, "--skip", metavar="N",
                             help="Leave out the first N images (the bundled bank calibrated on VOC val's first 64)."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda", rich_help_panel="Model and speed"),
    batch_size: int = typer.Option(8, "--batch-size", metavar="N", rich_help_panel="Model and speed"),
    precision: str = typer.Option("auto", "--precision", metavar="auto|fp32|bf16", rich_help_panel="Model and speed",
                                  help="auto: bf16 on CUDA, fp32 on the CPU."),
    no_speed: bool = flag(False, "--no-speed", panel="Model and speed", help="Skip the throughput measurement."),
    json_file: Optional[Path] = typer.Option(None, "--json", metavar="FILE", rich_help_panel="Output",
                                             show_default=False, help="Write every figure to this JSON file."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="FILE", rich_help_panel="Output", show_default=False,
                                        help="Write a PNG of PA-mIoU against mask ratio."),
):
    from ..bench.evaluate import METRICS, BenchSettings  # torch: imported when a command runs, not for --help
    from ..bench.evaluate import bench as run_bench
    from ..bench.events import BenchBatch

    if metric not in METRICS:
        raise UsageError(f"--metric {metric}: choose one of {', '.join(METRICS)}")
    s = BenchSettings(data=data, bank=bank, split=split, ratios=parse_floats(ratios, "--ratios") if ratios else None,
                      strategy=strategy, device=device, batch_size=batch_size, precision=precision, limit=limit,
                      skip=skip,
                      speed=not no_speed)
    with console.status("benchmarking...") as status:
        def on_event(e):
            if isinstance(e, BenchBatch):
                status.update(f"ratio {e.ratio:.2f}: {e.done}/{e.total} images")
        result = run_bench(s, on_event)
    table = Table(title=f"{result.data['images']} {split} images, {strategy} removal, mIoU in %")
    table.add_column("ratio", justify="right")
    table.add_column("method")
    if metric in ("pa-miou", "all"):
        table.add_column("PA-mIoU", justify="right")
    if metric in ("miou", "all"):
        table.add_column("mIoU", justify="right")
    ratios_seen = sorted({row["ratio"] for row in result.rows})
    for r in ratios_seen:
        for m in result.methods:
            row = next(x for x in result.rows if x["ratio"] == r and x["method"] == m)
            cells = [f"{r:.2f}" if m == result.methods[0] else "", m]
            if metric in ("pa-miou", "all"):
                cells.append(f"{row['pa_miou']:.1f}")
            if metric in ("miou", "all"):
                cells.append(f"{row['miou']:.1f}")
            table.add_row(*cells, end_section=m == result.methods[-1])
    results.print(table)
    if result.speed:
        sp = result.speed
        console.print(f"speed on {sp['device']} ({sp['precision']}, batch {sp['batch_size']}): "
                      f"model {sp['model_images_per_s']} img/s, whole repair path {sp['repair_images_per_s']} img/s")
    for n in result.notes:
        console.print(f"note: {n}")
    if json_file:
        write_atomic(json_file, json.dumps(asdict(result), indent=2).encode())
        console.print(f"figures written to {json_file}")
    if plot:
        from ..bench.plot import plot_pa_miou
        plot_pa_miou(result, plot)
        console.print(f"plot written to {plot}")
