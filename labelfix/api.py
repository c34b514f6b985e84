"""The Python API: what the three commands call, with their settings, results and errors.

    from labelfix.api import RepairSettings, repair

    if __name__ == "__main__":  # repair may spawn processes (RepairSettings.processes), which import this module
        result = repair(RepairSettings(labels="voc/SegmentationClass", images="voc/JPEGImages", missing=(255,)))
        print(result.totals, [row.file for row in result.rows if row.needs_review])
"""

from .bank.store import Bank, load_bank
from .bench.evaluate import BenchResult, BenchSettings, bench
from .bench.events import BenchBatch, BenchStarted
from .errors import BankError, DataError, InputFileError, LabelfixError, UsageError
from .files import OutputError
from .repair.events import FileDone, Note, RepairDone, RepairStarted
from .repair.report import merge_reports
from .repair.run import repair
from .repair.settings import ImageRow, RepairResult, RepairSettings
from .train.events import (
                           Calibrated,
                           CalibrateStep,
                           EpochDone,
                           ExtentFitted,
                           FeaturesStarted,
                           FeaturesStep,
                           FitStarted,
                           RefinerFitted,
                           Step,
                           TrainStarted,
)
from .train.loop import train_bank
from .train.settings import TrainResult, TrainSettings

__all__ = ["Bank", "load_bank", "BenchResult", "BenchSettings", "bench", "BankError", "DataError", "InputFileError",
           "LabelfixError", "UsageError", "OutputError", "ImageRow", "RepairResult", "RepairSettings", "merge_reports",
           "repair", "TrainResult", "TrainSettings", "train_bank",
           # the progress events each command's `progress` callback receives
           "BenchStarted", "BenchBatch", "RepairStarted", "Note", "FileDone", "RepairDone", "TrainStarted",
           "FeaturesStarted", "FeaturesStep", "Step", "EpochDone", "FitStarted", "ExtentFitted", "CalibrateStep",
           "Calibrated", "RefinerFitted"]
