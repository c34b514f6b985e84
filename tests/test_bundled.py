"""The bundled bank and examples: what README's first command runs."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelfix.bank.store import DEFAULT_BANK, load_bank
from labelfix.repair.run import repair
from labelfix.repair.settings import RepairSettings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "voc"


@pytest.mark.skipif(not (DEFAULT_BANK / "manifest.json").exists(), reason="no bundled bank in this checkout")
def test_bundled_bank_repairs_the_examples(tmp_path):
    bank = load_bank()  # the default, verified against its manifest hashes
    assert bank.classes.num_classes == 21 and len(bank.ratios) >= 3
    assert bank.config.encoder == "efficientnet-lite0" and bank.manifest.encoder["licence"] == "Apache-2.0"
    labels = tmp_path / "labels"
    shutil.copytree(EXAMPLES / "labels", labels)
    res = repair(RepairSettings(labels=labels, images=EXAMPLES / "images", missing=(255,), device="cpu"))
    assert res.failed == 0 and len(res.rows) == 6
    right = filled = 0
    for row in res.rows:
        out = np.array(Image.open(res.out / row.file))
        assert (out != 255).all()  # every missing pixel filled
        damaged = np.array(Image.open(labels / row.file))
        truth = np.array(Image.open(EXAMPLES / "truth" / row.file))
        scored = (damaged == 255) & (truth != 255)  # the holes, outlines aside
        right, filled = right + int((out[scored] == truth[scored]).sum()), filled + int(scored.sum())
    assert right / filled > 0.93  # the holes' pixels given their true class (the bundled bank: 0.976)
