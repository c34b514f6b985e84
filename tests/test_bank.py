import json
import shutil

import pytest

from labelfix.bank.store import load_bank, sha256
from labelfix.errors import BankError


def copy_bank(bank, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(bank, dst, ignore=shutil.ignore_patterns("train-state", "base.safetensors"))
    return dst


def test_round_trip(bank):
    b = load_bank(bank)
    assert b.ratios == [0.3, 0.5, 0.7]
    assert b.classes.names[1] == "red" and b.config.num_classes == 5
    m = b.model(0.5)
    assert not m.training
    assert b.nearest_ratio(0.62) == 0.7 and b.nearest_ratio(0.1) == 0.3 and b.nearest_ratio(0.4) == 0.3


def test_manifest_lists_hashes(bank):
    man = json.loads((bank / "manifest.json").read_text())
    assert man["format_version"] == 1 and man["input_size"] == 64 and man["patch_size"] == 8
    for key, entry in man["ratios"].items():
        assert sha256(bank / entry["file"]) == entry["sha256"]


def test_damaged_file_is_named(bank, tmp_path):
    b = copy_bank(bank, tmp_path)
    f = b / "ratio-0.50.safetensors"
    f.write_bytes(f.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BankError, match="ratio-0.50.safetensors: sha256 does not match"):
        load_bank(b)


def test_the_image_encoder_loads_frozen_and_its_file_is_checked(bank, tmp_path):
    encoder = load_bank(bank).encoder()
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    b = copy_bank(bank, tmp_path)
    f = b / "encoder.safetensors"
    f.write_bytes(f.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BankError, match="encoder.safetensors: sha256 does not match"):
        load_bank(b)
    man = json.loads((b / "manifest.json").read_text())
    del man["encoder"]
    (b / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BankError, match="lists no encoder file"):
        load_bank(b)


@pytest.mark.parametrize("key, name, getter", [("extent", "extent.safetensors", "extent")])
def test_optional_models_are_checked_and_may_be_absent(bank, tmp_path, key, name, getter):
    b = copy_bank(bank, tmp_path)
    assert getattr(load_bank(b), getter)() is not None
    f = b / name
    f.write_bytes(f.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BankError, match=f"{name}: sha256 does not match"):
        load_bank(b)
    man = json.loads((b / "manifest.json").read_text())
    del man[key]
    (b / "manifest.json").write_text(json.dumps(man))
    assert getattr(load_bank(b), getter)() is None  # an older bank: repair goes without it


def test_missing_file_and_manifest(bank, tmp_path):
    b = copy_bank(bank, tmp_path)
    (b / "ratio-0.30.safetensors").unlink()
    with pytest.raises(BankError, match="missing"):
        load_bank(b)
    with pytest.raises(BankError, match="not a labelfix bank"):
        load_bank(tmp_path)


def test_version_mismatch(bank, tmp_path):
    b = copy_bank(bank, tmp_path)
    man = json.loads((b / "manifest.json").read_text())
    man["format_version"] = 99
    (b / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BankError, match="format version 99"):
        load_bank(b)


def test_shape_mismatch_is_explained(bank, tmp_path):
    b = copy_bank(bank, tmp_path)
    man = json.loads((b / "manifest.json").read_text())
    man["model_config"]["enc_dim"] = 64
    man["model_config"]["dec_dim"] = 64
    (b / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BankError, match="shape"):
        load_bank(b).model(0.5)


def test_hf_bank_from_local_cache_offline(bank, tmp_path, monkeypatch):
    """hf://ORG/REPO resolves through huggingface_hub's cache; no network is needed or used."""
    cache = tmp_path / "hub"
    snap = cache / "models--someorg--voc-bank" / "snapshots" / ("a" * 40)
    shutil.copytree(bank, snap, ignore=shutil.ignore_patterns("train-state", "base.safetensors"))
    (cache / "models--someorg--voc-bank" / "refs").mkdir()
    (cache / "models--someorg--voc-bank" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache), raising=False)
    b = load_bank("hf://someorg/voc-bank")
    assert b.ratios == [0.3, 0.5, 0.7]
    with pytest.raises(BankError, match="cannot fetch"):
        load_bank("hf://someorg/not-there")


def test_a_manifest_reads_and_writes_back_byte_for_byte_keeping_entries_it_does_not_know(bank, tmp_path):
    from labelfix.bank.manifest import Manifest, update_manifest

    dst = copy_bank(bank, tmp_path)
    raw = json.loads((dst / "manifest.json").read_text())
    raw["made_by"] = {"tool": "a newer labelfix"}
    (dst / "manifest.json").write_text(json.dumps(raw, indent=2) + "\n")
    before = (dst / "manifest.json").read_bytes()
    Manifest.read(dst).write(dst)
    assert (dst / "manifest.json").read_bytes() == before
    update_manifest(dst, calibration={"images": 1})
    after = json.loads((dst / "manifest.json").read_text())
    assert after["made_by"] == {"tool": "a newer labelfix"} and after["calibration"] == {"images": 1}


@pytest.mark.parametrize("key,value,reason", [
    ("correction_weight", {"missing": "high"}, "correction_weight' of missing is 'high'"),
    ("guided_filter", ["missing"], "guided_filter' must map each repair mode"),
    ("guided_filter", {"blind": "false"}, "not a true/false"),
    ("extent", {"hidden": 32}, "'extent' must name its weights file"),
])
def test_a_manifest_entry_of_the_wrong_kind_is_a_bank_error_naming_it(bank, tmp_path, key, value, reason):
    dst = copy_bank(bank, tmp_path)
    raw = json.loads((dst / "manifest.json").read_text())
    raw[key] = value
    (dst / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BankError, match=reason):
        load_bank(dst)
