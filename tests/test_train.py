import json
import math
import os
import subprocess
import sys

import pytest
import torch

from labelfix.bank.store import load_bank
from labelfix.classes import ClassSet
from labelfix.errors import UsageError
from labelfix.model.config import preset
from labelfix.train.loop import make_training_batch, train_bank
from labelfix.train.settings import TrainSettings


def test_bank_trains_on_generic_layout_with_5_classes(bank):
    b = load_bank(bank)
    assert b.config.num_classes == 5
    rows = [json.loads(line) for line in (bank / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["base", "base", "finetune-0.30", "finetune-0.50", "finetune-0.70"]
    assert all("val" in r for r in rows[1:])  # the last epoch of every stage is validated
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert b.manifest.encoder["name"] == "stand-in" and b.encoder() is not None


@pytest.mark.slow
def test_two_steps_then_resume(dataset, tmp_path):
    s = TrainSettings(data=dataset, out=tmp_path / "b", preset="tiny", epochs=2, finetune_epochs=0, batch_size=6,
                      val_every=0, limit_images=12, device="cpu", max_minutes=0.0)
    first = train_bank(s)  # stops after its first epoch (2 steps of 6 images)
    assert not first.finished and not (tmp_path / "b" / "manifest.json").exists()
    second = train_bank(TrainSettings(**{**s.__dict__, "resume": True, "max_minutes": None}))
    assert second.finished
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert load_bank(tmp_path / "b").ratios == [0.3, 0.5, 0.7]
    with pytest.raises(UsageError, match="already holds a bank"):
        train_bank(TrainSettings(**{**s.__dict__, "max_minutes": None}))


def test_budget_ends_each_stage_early_and_the_bank_is_complete(dataset, tmp_path):
    # a zero budget: every stage stops after its first epoch, however many epochs were asked for
    out = tmp_path / "b"
    res = train_bank(TrainSettings(data=dataset, out=out, preset="tiny", epochs=50, finetune_epochs=50, batch_size=6,
                                   val_every=0, limit_images=12, device="cpu", budget_minutes=0.0, calibrate_images=0,
                                   workers=2))
    assert res.finished and load_bank(out).ratios == [0.3, 0.5, 0.7]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in rows] == [("base", 1), ("finetune-0.30", 1), ("finetune-0.50", 1),
                                                        ("finetune-0.70", 1)]
    assert all("val" in r for r in rows)  # a stage cut short by the budget is still validated
    man = json.loads((out / "manifest.json").read_text())
    assert man["training"]["epochs_run"] == {"base": 1, "finetune-0.30": 1, "finetune-0.50": 1, "finetune-0.70": 1}


def test_training_batch_kinds_learn_exactly_the_editable_pixels():
    cfg = preset("tiny", 3)
    classes = ClassSet(("bg", "a", "b"), 255, 0)
    g = torch.Generator().manual_seed(0)
    label = torch.zeros(8, 64, 64, dtype=torch.long)
    label[:, 10:40, 10:40] = 1
    label[:, 45:60, 5:30] = 2
    for kind, mix in enumerate(((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1))):
        label_in, removed, editable, target = make_training_batch(label, 0.5, cfg, classes, mix, g)
        assert torch.equal(editable, target >= 0)  # exactly the editable pixels are learned
        assert torch.equal(target[editable], label[editable])
        assert editable.any() and removed.any()
        if kind < 2:  # paper and missing blocks: editable pixels are unknown to the model
            assert (label_in[editable] == -1).all()
        else:  # blind: editable pixels keep their (background) label
            assert (label_in[editable] == 0).all()
            assert (label_in != label).any()  # some objects were set to background


@pytest.mark.slow
def test_two_process_gloo_run(dataset, tmp_path):
    """The torchrun / DistributedDataParallel path, on 2 CPU processes with gloo."""
    script = tmp_path / "run.py"
    script.write_text(
        "from pathlib import Path\nfrom labelfix.api import TrainSettings, train_bank\n"
        f"train_bank(TrainSettings(data=Path({str(dataset)!r}), out=Path({str(tmp_path / 'ddp')!r}), preset='tiny',"
        " epochs=1, finetune_epochs=1, ratios=(0.5,), batch_size=3, val_every=0, device='cpu'))\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        "29533", str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    b = load_bank(tmp_path / "ddp")
    assert b.manifest.training["world_size"] == 2
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2  # one base epoch and one fine-tune epoch, logged once (rank 0)


def test_bad_ratios_are_a_usage_error(dataset, tmp_path):
    with pytest.raises(UsageError, match="between 0 and 1"):
        train_bank(TrainSettings(data=dataset, out=tmp_path / "x", preset="tiny", ratios=(1.5,)))


@pytest.mark.parametrize("bad, reason", [(dict(damage_mix=(1.0, 0.0)), "--damage-mix"),
                                         (dict(damage_mix=(1.0, -0.5, 0.2, 0.3)), "--damage-mix"),
                                         (dict(min_crop=0.0), "--min-crop"), (dict(views=0), "--views")])
def test_bad_augmentation_settings_are_usage_errors(dataset, tmp_path, bad, reason):
    with pytest.raises(UsageError, match=reason):
        train_bank(TrainSettings(data=dataset, out=tmp_path / "x", preset="tiny", **bad))


def test_init_starts_from_a_bank_and_fine_tunes_it(bank, dataset, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "tuned"
    train_bank(TrainSettings(data=dataset, out=out, preset="small", epochs=0, finetune_epochs=0, batch_size=4,
                             val_every=0, device="cpu", init=str(bank), calibrate_images=0))
    tuned, original = load_bank(out), load_bank(bank)
    assert tuned.config == original.config  # the init bank's config wins over --preset
    # no epochs: every ratio model is the init bank's middle model, bias aside
    a, b = load_file(str(out / "ratio-0.30.safetensors")), load_file(str(bank / "ratio-0.50.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a if k != "logit_bias")
    man = json.loads((out / "manifest.json").read_text())
    assert man["training"]["init_manifest_sha256"] == original.manifest_sha256

    out2 = tmp_path / "tuned2"
    train_bank(TrainSettings(data=dataset, out=out2, epochs=0, finetune_epochs=1, batch_size=4, val_every=0,
                             device="cpu", init=str(bank), calibrate_images=0))
    c = load_file(str(out2 / "ratio-0.70.safetensors"))
    d = load_file(str(bank / "ratio-0.70.safetensors"))
    assert not all(torch.equal(c[k], d[k]) for k in c)  # the 0.7 fine-tune started from 0.7 and moved
    assert load_bank(out2).ratios == original.ratios


def test_init_with_other_classes_is_a_usage_error(bank, tmp_path):
    from conftest import make_dataset

    other = make_dataset(tmp_path / "other", n_train=2, n_val=1)
    cj = json.loads((other / "classes.json").read_text())
    cj["names"] = [f"c{i}" for i in range(len(cj["names"]))]
    (other / "classes.json").write_text(json.dumps(cj))
    with pytest.raises(UsageError, match="--init"):
        train_bank(TrainSettings(data=other, out=tmp_path / "x", epochs=0, device="cpu", init=str(bank)))


def test_the_encoder_named_in_the_weights_file_is_the_one_the_models_read(tmp_path):
    from safetensors.torch import save_file

    from labelfix.train.loop import _weights_encoder

    def weights(name):
        path = tmp_path / f"{name}.safetensors"
        save_file({"x": torch.zeros(1)}, str(path), metadata={"name": name})
        return str(path)

    assert _weights_encoder(TrainSettings(data=tmp_path, out=tmp_path, encoder_weights=weights("efficientnet-lite2"))) \
        == "efficientnet-lite2"
    bundled = _weights_encoder(TrainSettings(data=tmp_path, out=tmp_path))  # the bundled bank's encoder
    assert bundled in (None, load_bank(None).config.encoder)
    assert _weights_encoder(TrainSettings(data=tmp_path, out=tmp_path, preset="paper",
                                          encoder_weights=weights("efficientnet-lite2"))) is None  # raw RGB stays
    with pytest.raises(UsageError, match="does not know"):
        _weights_encoder(TrainSettings(data=tmp_path, out=tmp_path, encoder_weights=weights("resnet-9000")))
