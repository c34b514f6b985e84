import json
import shutil

from typer.testing import CliRunner

from labelfix.cli import app

runner = CliRunner()


def make_job(dataset, tmp_path):
    labels, images = tmp_path / "labels", tmp_path / "images"
    labels.mkdir()
    images.mkdir()
    for stem in (dataset / "splits" / "val.txt").read_text().split()[:3]:
        shutil.copy(dataset / "labels" / f"{stem}.png", labels)
        shutil.copy(dataset / "images" / f"{stem}.jpg", images)
    shutil.copy(dataset / "classes.json", labels)  # what says these index labels use the bank's classes
    return labels, images


def test_repair_exit_codes(dataset, bank, tmp_path):
    labels, images = make_job(dataset, tmp_path)
    r = runner.invoke(app, ["repair", str(labels), "--images", str(images), "--bank", str(bank), "--quiet",
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith("labels-repaired")
    (labels / "junk.png").write_bytes(b"nope")
    r = runner.invoke(app, ["repair", str(labels), "--images", str(images), "--bank", str(bank), "--overwrite"])
    assert r.exit_code == 1
    assert "junk.png: is not a readable PNG" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["repair", str(labels), "--images", str(tmp_path / "nope"), "--bank", str(bank)])
    assert r.exit_code == 2 and "images folder not found" in r.output
    r = runner.invoke(app, ["repair", str(labels), "--images", str(images), "--bank", str(tmp_path)])
    assert r.exit_code == 1 and "not a labelfix bank" in r.output
    r = runner.invoke(app, ["repair", str(labels), "--images", str(images), "--bank", str(bank), "--workers", "-1"])
    assert r.exit_code == 2 and "--workers" in r.output
    r = runner.invoke(app, ["repair", str(labels), "--images", str(images), "--bank", str(bank), "--precision", "fp8"])
    assert r.exit_code == 2 and "--precision fp8" in r.output
    r = runner.invoke(app, ["repair", str(labels), "--images", str(images), "--bank", str(bank), "--processes", "-2"])
    assert r.exit_code == 2 and "--processes" in r.output


def test_repair_finds_the_images_where_the_layout_keeps_them(dataset, bank, tmp_path):
    labels, images = make_job(dataset, tmp_path)  # labels/ beside images/
    r = runner.invoke(app, ["repair", str(labels), "--bank", str(bank), "--device", "cpu", "--missing", "255"])
    assert r.exit_code == 0, r.output
    assert f"images: {images}  (found where the layout keeps them" in r.output
    report = json.loads((tmp_path / "labels-repaired" / "report.json").read_text())
    assert report["settings"]["images"] == str(images) and report["totals"]["failed"] == 0
    lonely = tmp_path / "elsewhere" / "labels"
    lonely.mkdir(parents=True)
    shutil.copy(next(labels.glob("*.png")), lonely)
    r = runner.invoke(app, ["repair", str(lonely), "--bank", str(bank), "--classes", "bank"])
    assert r.exit_code == 2 and "--images is required: no images of the labels where datasets keep them" in r.output
    assert not (tmp_path / "elsewhere" / "labels-repaired").exists()


def test_repair_in_each_precision_records_it(dataset, bank, tmp_path):
    labels, images = make_job(dataset, tmp_path)
    for precision in ("fp32", "bf16"):  # bf16 runs on any CPU, natively or not
        out = tmp_path / precision
        r = runner.invoke(app, ["repair", str(labels), "--images", str(images), "--bank", str(bank), "--out", str(out),
                                "--device", "cpu", "--precision", precision, "--quiet"])
        assert r.exit_code == 0, r.output
        report = json.loads((out / "report.json").read_text())
        assert report["runtime"] == {"device": "cpu", "precision": precision, "processes": 1}
        assert report["totals"]["failed"] == 0


def test_repair_json_output(dataset, bank, tmp_path):
    labels, images = make_job(dataset, tmp_path)
    r = runner.invoke(app, ["repair", str(labels), "--images", str(images), "--bank", str(bank), "--json",
                            "--missing", "255"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["totals"]["files"] == 3 and len(d["rows"]) == 3


def test_bench_cli_writes_json_and_plot(dataset, bank, tmp_path):
    r = runner.invoke(app, ["bench", "--data", str(dataset), "--bank", str(bank), "--metric", "all", "--ratios", "0.5",
                            "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png"), "--no-speed"])
    assert r.exit_code == 0, r.output
    assert "background-first removal" in r.output and "0.50" in r.output
    assert json.loads((tmp_path / "b.json").read_text())["rows"]
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_train_cli_usage_error(tmp_path):
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "none")])
    assert r.exit_code == 1 and "dataset folder not found" in r.output
    r = runner.invoke(app, ["train", "--data", str(tmp_path), "--ratios", "a,b"])
    assert r.exit_code == 2 and "--ratios" in r.output


def test_train_cli_augmentation_options_reach_the_bank(dataset, tmp_path):
    out = tmp_path / "b"
    r = runner.invoke(app, ["train", "--data", str(dataset), "--out", str(out), "--preset", "tiny", "--epochs", "1",
                            "--finetune-epochs", "0", "--batch-size", "4", "--calibrate-images", "0",
                            "--views", "3", "--min-crop", "0.2", "--damage-mix", "0.1,0.5,0.2,0.2", "-q"])
    assert r.exit_code == 0, r.output
    training = json.loads((out / "manifest.json").read_text())["training"]
    assert training["views"] == 3 and training["min_crop"] == 0.2
    assert training["damage_mix"] == {"paper": 0.1, "missing-blocks": 0.5, "blind-blocks": 0.2, "blind-objects": 0.2}


def test_version():
    from labelfix import __version__

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"labelfix {__version__}"


def test_a_wrong_images_folder_is_one_error_and_many_failures_are_counted(dataset, bank, tmp_path):
    labels, images = make_job(dataset, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(next(images.iterdir()), elsewhere / "unrelated.jpg")
    r = runner.invoke(app, ["repair", str(labels), "--images", str(elsewhere), "--bank", str(bank)])
    assert r.exit_code == 2 and "holds no image of the first 3 labels" in r.output
    assert not (tmp_path / "labels-repaired").exists()
    first = next(labels.glob("*.png"))
    for i in range(25):  # broken files: each a failed row, only the first 20 named on the console
        (labels / f"broken{i:02d}.png").write_bytes(b"not a png")
    r = runner.invoke(app, ["repair", str(labels), "--images", str(images), "--bank", str(bank), "--device", "cpu"])
    assert r.exit_code == 1
    assert r.output.count("is not a readable PNG") == 20 and "5 more files failed" in r.output
    report = json.loads((tmp_path / "labels-repaired" / "report.json").read_text())
    assert report["totals"]["failed"] == 25 and first.name in {row["file"] for row in report["rows"]}


def test_shards_from_a_launcher_s_environment_and_the_last_joins(dataset, bank, tmp_path, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"):
        monkeypatch.delenv(key, raising=False)
    labels, images = make_job(dataset, tmp_path)
    args = ["repair", str(labels), "--images", str(images), "--bank", str(bank), "--device", "cpu"]
    r = runner.invoke(app, args + ["--shard", "auto"])
    assert r.exit_code == 2 and "--shard auto: no torchrun" in r.output
    out = tmp_path / "labels-repaired"
    r = runner.invoke(app, args, env={"RANK": "0", "WORLD_SIZE": "2"})  # torchrun: each rank its share
    assert r.exit_code == 0 and (out / "report.shard-0-of-2.json").exists() and not (out / "report.json").exists()
    r = runner.invoke(app, args + ["--shard", "auto"], env={"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"})
    assert r.exit_code == 0 and "every shard is done, joined in report.json" in r.output
    assert len(json.loads((out / "report.json").read_text())["rows"]) == 3


def test_help_shows_flags_as_typed_and_values_parse_as_documented(monkeypatch, tmp_path):
    import importlib

    for command in ("repair", "train", "bench"):
        r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "120"})
        assert r.exit_code == 0 and "<bool>" not in r.output and "list[" not in r.output, r.output
    assert "Examples" in runner.invoke(app, ["repair", "--help"]).output
    repair_module = importlib.import_module("labelfix.repair.run")
    seen = []

    def capture(settings, progress):
        seen.append(settings)
        raise SystemExit(0)

    monkeypatch.setattr(repair_module, "repair", capture)
    (tmp_path / "l").mkdir()
    runner.invoke(app, ["repair", str(tmp_path / "l"), "--missing", "0,255", "--missing", "7", "--preview"])
    assert seen[0].missing == (0, 255, 7) and seen[0].preview is True
    r = runner.invoke(app, ["repair", str(tmp_path / "l"), "--missing", "x"])
    assert r.exit_code == 2 and "--missing" in r.output
