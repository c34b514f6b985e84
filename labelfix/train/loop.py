"""Training a bank: one base L-MAE on mixed mask ratios, then a short fine-tune per ratio.

The base model learns every kind of damage labelfix repairs: the paper's three mask
strategies (1:2:2), explicit missing blocks, and blind damage (blocks or objects set to background,
then background-first removal). Adam (beta1 0.9, weight decay 1e-4) with ReduceLROnPlateau
(patience 5, threshold 1e-3, factor 0.8), as in the paper. Runs on one device, or on several
processes under `torchrun` (DistributedDataParallel; gloo on CPU, nccl on CUDA). What follows the
training (the background bias, calibration, the boundary refiner) is train/finish.py."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save

from ..bank.manifest import MANIFEST, Manifest
from ..bank.store import DEFAULT_BANK, Bank, load_bank, load_encoder, ratio_key, save_weights, sha256
from ..bench.metrics import confusion, mean_iou
from ..classes import ClassSet
from ..data import open_dataset
from ..device import autocast, fit_threads_to_load, pick_device
from ..errors import UsageError
from ..files import write_atomic
from ..model.config import PRESETS, LMAEConfig, preset
from ..model.encoder import ENCODERS, ImageEncoder
from ..model.lmae import LMAE, count_parameters
from ..model.loss import class_weights, weighted_cross_entropy
from ..model.masking import background_first_mask, background_pixels, expand_mask, hole_patches, mixed_mask, patch_mean
from ..model.propagate import nearest_fill
from .damage import blind_editable, drop_classes, random_blocks
from .events import EpochDone, FeaturesStarted, FeaturesStep, Step, TrainStarted
from .features import attach
from .finish import finish_bank
from .samples import EpochTaggedSampler, TrainSamples
from .settings import DAMAGE_KINDS, FINETUNE_SHARE, TrainResult, TrainSettings

SAVE_EVERY_S = 60.0   # resumable training state, at most this often (and at every stage's end)


def make_training_batch(label: torch.Tensor, ratio: float, cfg: LMAEConfig, classes: ClassSet,
                        mix, gen: torch.Generator):
    """Damage a batch of true labels, each sample one of DAMAGE_KINDS.

    (B, S, S) -> label_in (-1 = unknown), removed (B, L), editable (B, S, S), target (the true label
    at the editable pixels, -1 elsewhere).
    """
    B, S, _ = label.shape
    p, bg = cfg.patch_size, classes.background_index
    kind = torch.multinomial(torch.tensor(mix, dtype=torch.float), B, replacement=True, generator=gen)
    kind = kind.view(B, 1, 1).to(label.device)
    # paper: whole patches removed with the 1:2:2 strategy mix; their labels are unknown
    removed_paper, _ = mixed_mask(patch_mean(background_pixels(label, bg), p), ratio, gen)
    paper_px = expand_mask(removed_paper, cfg.grid, p)
    # explicit missing blocks (unaligned with patches); repair with --missing removes every patch
    # holding a hole of missing pixels, void included (thin outlines stay unknown in visible patches):
    # so does training
    coverage = 0.1 + 0.4 * torch.rand(1, generator=gen).item()
    blocks = random_blocks(B, S, S, coverage, gen, device=label.device)
    removed_missing = hole_patches(blocks | (label < 0), p)
    # blind: blocks or whole classes set to background, then background-first removal; the background
    # of removed patches is editable but keeps its (possibly wrong) label
    dropped = drop_classes(label, bg, 0.5, gen)
    # half the time their void outline goes with them (an object nobody outlined): the void within 2 px
    forget = torch.rand(B, 1, 1, generator=gen).to(label.device) < 0.5
    near = F.max_pool2d(dropped[:, None].float(), 5, 1, 2)[:, 0] > 0
    dropped = dropped | (forget & near & (label < 0))
    hidden = ((kind == 2) & blocks) | ((kind == 3) & dropped)
    damaged = torch.where(hidden, torch.full_like(label, bg if bg is not None else -1), label)
    removed_blind = background_first_mask(patch_mean(background_pixels(damaged, bg), p), ratio, gen)
    editable_blind = blind_editable(damaged, expand_mask(removed_blind, cfg.grid, p), bg)

    k = kind.view(B, 1)
    removed = torch.where(k == 0, removed_paper, torch.where(k == 1, removed_missing, removed_blind))
    unknown = torch.where(kind == 0, paper_px, torch.where(kind == 1, blocks, torch.zeros_like(blocks)))
    label_in = torch.where(unknown, torch.full_like(label, -1), damaged)
    editable = torch.where(kind >= 2, editable_blind, unknown) | (label_in < 0)
    target = torch.where(editable, label, torch.full_like(label, -1))
    return label_in, removed, editable, target


def class_shares(samples: TrainSamples, num_classes: int) -> torch.Tensor:
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for _, lab in samples.data:
        t = torch.from_numpy(lab)
        counts += torch.bincount(t[t >= 0], minlength=num_classes).double()
    return (counts / counts.sum().clamp(min=1)).float()


@torch.no_grad()
def validate(model: LMAE, samples: TrainSamples, ratio: float, classes: ClassSet, device, batch_size: int) -> dict:
    """Paper protocol at the model's input size: background-first removal at `ratio`; PA-mIoU over removed pixels."""
    model.eval()
    cfg = model.cfg
    K = cfg.num_classes
    conf_pa = torch.zeros(K, K, dtype=torch.long)
    conf_all = torch.zeros(K, K, dtype=torch.long)
    conf_nn = torch.zeros(K, K, dtype=torch.long)
    for i in range(0, len(samples), batch_size):
        items = [samples[j] for j in range(i, min(i + batch_size, len(samples)))]
        image = torch.stack([it[0] for it in items]).to(device)
        label = torch.stack([it[1] for it in items]).to(device)
        features = [torch.stack([it[m] for it in items]).to(device).float() for m in range(2, len(items[0]))] or None
        removed = background_first_mask(patch_mean(background_pixels(label, classes.background_index), cfg.patch_size),
                                        ratio)
        removed_px = expand_mask(removed, cfg.grid, cfg.patch_size)
        label_in = torch.where(removed_px, torch.full_like(label, -1), label)
        with autocast(device):
            pred = model(image, label_in, removed, features=features).argmax(1)
        pred = torch.where(removed_px, pred, label)
        conf_pa += confusion(pred, label, K, removed_px)
        conf_all += confusion(pred, label, K)
        conf_nn += confusion(nearest_fill(label_in), label, K, removed_px)
    model.train()
    return {"ratio": ratio, "pa_miou": mean_iou(conf_pa), "miou": mean_iou(conf_all),
            "nearest_pa_miou": mean_iou(conf_nn)}


def _save_state(folder: Path, model, opt, sched, info: dict):
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "model.safetensors",
                 save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))
    tensors, meta = {}, {"param_groups": [], "scheduler": sched.state_dict(), "shapes": {}}
    sd = opt.state_dict()
    for i, st in sd["state"].items():
        for k, v in st.items():
            # safetensors keeps 0-dim tensors poorly: store flat, remember the shape
            tensors[f"{i}.{k}"] = v.detach().cpu().reshape(-1).contiguous()
            meta["shapes"][f"{i}.{k}"] = list(v.shape)
    meta["param_groups"] = sd["param_groups"]
    write_atomic(folder / "optim.safetensors", save(tensors))
    meta["info"] = info
    write_atomic(folder / "state.json", json.dumps(meta, default=float).encode())


def _load_state(folder: Path, model, opt, sched) -> dict:
    meta = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    flat = load_file(str(folder / "optim.safetensors"))
    params = list(model.parameters())
    shapes = meta.get("shapes", {})
    state: dict = {}
    for key, v in flat.items():
        i, k = key.split(".", 1)
        shape = shapes.get(key, [] if k == "step" else list(params[int(i)].shape))
        state.setdefault(int(i), {})[k] = v.reshape(shape)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched.load_state_dict(meta["scheduler"])
    return meta["info"]


def _bank_encoder(s: TrainSettings, cfg: LMAEConfig, init_bank, out: Path) -> dict | None:
    """Write the image encoder the models read into the bank (encoder.safetensors); its manifest entry, or
    None for a config without one. Its weights come from --encoder-weights, else the --init bank, else the
    bundled bank; the tests' stand-in is initialised at random from the seed."""
    if cfg.encoder == "none":
        return None
    dest = out / "encoder.safetensors"
    if cfg.encoder == "stand-in":
        torch.manual_seed(s.seed)
        save_weights(ImageEncoder("stand-in"), dest)
        provenance = {"source": "random initialisation (a stand-in for tests)", "licence": None}
    else:
        source = _encoder_source(s, init_bank)
        if not source.is_file():
            raise UsageError(f"{source}: no image encoder weights there; convert them with "
                             "`python scripts/convert_encoder.py FILE` and pass --encoder-weights FILE")
        provenance = _weights_metadata(source)
        if source.resolve() != dest.resolve():
            write_atomic(dest, source.read_bytes())
    return {"file": dest.name, "sha256": sha256(dest), "name": cfg.encoder, **provenance}


def _encoder_source(s: TrainSettings, init_bank) -> Path:
    """Where the image encoder's weights come from: --encoder-weights, else the --init bank, else the bundled bank."""
    if s.encoder_weights:
        return Path(s.encoder_weights)
    return (init_bank.path if init_bank else DEFAULT_BANK) / "encoder.safetensors"


def _weights_metadata(path: Path) -> dict[str, str]:
    """An encoder weights file's metadata: its name, source and licence (scripts/convert_encoder.py)."""
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def _weights_encoder(s: TrainSettings) -> str | None:
    """For a new bank of a preset that reads a pretrained encoder: the encoder its weights file names
    (scripts/convert_encoder.py writes it); None keeps the preset's."""
    if PRESETS.get(s.preset, {}).get("encoder", "none") in ("none", "stand-in"):
        return None
    path = _encoder_source(s, None)
    if not path.is_file():
        return None  # _bank_encoder says what is wrong
    name = _weights_metadata(path).get("name")
    if name is not None and name not in ENCODERS:
        raise UsageError(f"{path}: the weights of an image encoder labelfix does not know ({name})")
    return name


def _init_bank(s: TrainSettings, classes: ClassSet):
    """The bank named by --init, checked against the dataset's classes; None without --init."""
    if not s.init:
        return None
    bank = load_bank(s.init)
    if tuple(bank.classes.names) != tuple(classes.names):
        raise UsageError(f"--init {s.init}: the bank's {bank.classes.num_classes} classes "
                         f"({', '.join(bank.classes.names[:3])}, ...) are not the dataset's "
                         f"{classes.num_classes} ({', '.join(classes.names[:3])}, ...)")
    return bank


def _load_init(model: LMAE, bank, ratio: float, weights: torch.Tensor) -> None:
    """Copy the init bank's model of `ratio` into `model`; the logit bias stays this dataset's."""
    model.load_state_dict(bank.model(ratio, "cpu").state_dict())
    model.logit_bias.copy_(-torch.log(weights))


@dataclass(frozen=True)
class _Process:
    """This process's place in the run: its device, and its rank among `world` (one without torchrun)."""
    device: torch.device
    rank: int
    world: int
    distributed: bool

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the bank and reports progress."""
        return self.rank == 0


@dataclass
class _Data:
    """The datasets, model config and image encoder a run trains with."""
    classes: ClassSet
    cfg: LMAEConfig
    init_bank: Bank | None  # --init's
    train_pairs: list
    val_pairs: list
    train_set: TrainSamples
    val_set: TrainSamples
    weights: torch.Tensor
    encoder_entry: dict | None


@dataclass
class _Run:
    """The state the pieces of one training run share."""
    s: TrainSettings
    proc: _Process
    data: _Data
    progress: Callable[[object], None]
    out: Path
    stages: list[str]
    model: LMAE
    ddp_model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.ReduceLROnPlateau
    info: dict
    sampler: EpochTaggedSampler
    loader: torch.utils.data.DataLoader
    gen: torch.Generator
    t_start: float
    final_val: dict = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        """Where the resumable training state is kept."""
        return self.out / "train-state"

    def log(self, epoch: EpochDone) -> None:
        """Append the epoch's row to metrics.jsonl and report it (rank 0 only)."""
        if self.proc.main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(epoch.row()) + "\n")
            self.progress(epoch)

    def out_of_time(self) -> bool:
        """Whether --max-minutes is spent."""
        return self.s.max_minutes is not None and (time.time() - self.t_start) > self.s.max_minutes * 60

    def stage_seconds(self, stage: str) -> float:
        """A stage's share of --budget-minutes: fine-tunes FINETUNE_SHARE of it together, the base the rest."""
        if self.s.budget_minutes is None:
            return float("inf")
        tunes = len(self.stages) - 1
        share = (FINETUNE_SHARE / tunes if stage != "base" else 1 - FINETUNE_SHARE) if tunes else 1.0
        return self.s.budget_minutes * 60 * share


def _setup_process(s: TrainSettings) -> _Process:
    """Pick the device and, under torchrun, join the process group (nccl on CUDA, gloo on CPU)."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = pick_device(s.device)
    if distributed:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    else:
        rank, world = 0, 1
    return _Process(device, rank, world, distributed)


def _check_settings(s: TrainSettings) -> None:
    """Refuse ratios, damage shares and crop settings that make no sense, as usage errors."""
    if not s.ratios or any(not 0.0 < r < 1.0 for r in s.ratios):
        raise UsageError(f"--ratios {s.ratios}: each ratio must be between 0 and 1")
    if sum(s.damage_mix) <= 0 or len(s.damage_mix) != len(DAMAGE_KINDS) or min(s.damage_mix) < 0:
        raise UsageError(f"--damage-mix needs {len(DAMAGE_KINDS)} non-negative shares ({', '.join(DAMAGE_KINDS)})")
    if not 0.0 < s.min_crop <= 1.0 or s.views < 1:
        raise UsageError(f"--min-crop {s.min_crop} must be in (0, 1] and --views {s.views} at least 1")


def _prepare_data(s: TrainSettings, proc: _Process, out: Path, progress: Callable[[object], None]) -> _Data:
    """Open the dataset, choose the model config, start the bank folder and cache the encoder's features."""
    ds = open_dataset(s.data)
    classes = ds.classes
    init_bank = _init_bank(s, classes)
    cfg = init_bank.config if init_bank else preset(s.preset, classes.num_classes, input_size=s.input_size,
                                                    patch_size=s.patch_size, encoder=_weights_encoder(s))
    torch.manual_seed(s.seed)
    train_pairs = ds.pairs(s.train_split)[: s.limit_images]
    val_pairs = ds.pairs(s.val_split)
    if s.val_images:
        val_pairs = val_pairs[: s.val_images]
    train_set = TrainSamples(train_pairs, classes, cfg.input_size, augment=True, seed=s.seed,
                             min_crop=s.min_crop, views=s.views if cfg.encoder != "none" else 0)
    val_set = TrainSamples(val_pairs, classes, cfg.input_size, augment=False)
    weights = class_weights(class_shares(train_set, cfg.num_classes)).to(proc.device)

    out.mkdir(parents=True, exist_ok=True)  # every rank: each writes the encoder's weights next (atomically)
    if proc.main:
        write_atomic(out / "train-settings.json", json.dumps(asdict(s), default=str, indent=2).encode())
    encoder_entry = _bank_encoder(s, cfg, init_bank, out)
    if encoder_entry:
        encoder = load_encoder(out / encoder_entry["file"], cfg.encoder, proc.device)
        for samples in (train_set, val_set):
            progress(FeaturesStarted(len(samples), samples.view_count()))
            attach(samples, encoder, encoder_entry["sha256"], cfg.encoder_size,
                   progress=lambda done, total: progress(FeaturesStep(done, total)))
        del encoder
    return _Data(classes, cfg, init_bank, train_pairs, val_pairs, train_set, val_set, weights, encoder_entry)


def _optimiser(model: LMAE, lr: float, weight_decay: float):
    """Adam and its ReduceLROnPlateau schedule, as in the paper."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=5, threshold=1e-3, factor=0.8)
    return opt, sched


def _start_run(s: TrainSettings, proc: _Process, data: _Data, out: Path, progress: Callable[[object], None]) -> _Run:
    """Build the model, optimiser and loader (or resume them from the saved state) and report the start."""
    stages = ["base"] + [f"finetune-{ratio_key(r)}" for r in s.ratios if s.finetune_epochs > 0]
    state_dir = out / "train-state"
    model = LMAE(data.cfg).to(proc.device)
    if data.init_bank:
        # the base starts from the init bank's middle-ratio model
        _load_init(model, data.init_bank, data.init_bank.ratios[len(data.init_bank.ratios) // 2], data.weights)
    model.logit_bias.copy_(-torch.log(data.weights))
    info = {"stage": 0, "epoch": 0, "files": {}, "elapsed": 0.0}
    opt, sched = _optimiser(model, s.lr, s.weight_decay)
    if s.resume:
        if not (state_dir / "state.json").exists():
            raise UsageError(f"--resume: no saved training state in {state_dir}")
        info = _load_state(state_dir, model, opt, sched)
    elif proc.main and (out / MANIFEST).exists():
        raise UsageError(f"{out}: already holds a bank; choose another --out, or --resume an interrupted run")
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if proc.distributed else model

    train_set = data.train_set
    if proc.distributed:
        inner = torch.utils.data.distributed.DistributedSampler(train_set, proc.world, proc.rank, shuffle=True,
                                                                seed=s.seed)
    else:
        inner = torch.utils.data.RandomSampler(train_set, generator=torch.Generator().manual_seed(s.seed))
    sampler = EpochTaggedSampler(inner)
    # persistent workers: a GPU epoch of ~1k images lasts about a second, less than starting the workers
    loader = torch.utils.data.DataLoader(train_set, batch_size=s.batch_size, sampler=sampler, num_workers=s.workers,
                                         drop_last=len(train_set) >= s.batch_size, persistent_workers=s.workers > 0,
                                         pin_memory=proc.device.type == "cuda")
    gen = torch.Generator().manual_seed(s.seed * 1000 + proc.rank)
    t_start = time.time() - info.get("elapsed", 0.0)
    if proc.main:
        progress(TrainStarted(count_parameters(model), data.cfg.to_dict(), len(train_set), str(proc.device),
                              proc.world, stages))
    return _Run(s, proc, data, progress, out, stages, model, ddp_model, opt, sched, info, sampler, loader, gen,
                t_start)


def _run_epoch(run: _Run, stage: str, epochs: int, stage_ratios: list[float]) -> EpochDone:
    """Train one epoch of `stage`, step the schedule and count it in the state."""
    s, info, device, data = run.s, run.info, run.proc.device, run.data
    base = stage == "base"
    lo, hi = min(stage_ratios) - 0.1, max(stage_ratios) + 0.1
    epoch = info["epoch"]
    if device.type == "cpu":
        fit_threads_to_load()
    run.sampler.set_epoch(epoch + 1000 * info["stage"])
    run.model.train()
    tot, n, t0 = 0.0, 0, time.time()
    steps = len(run.loader)
    for step, (image, label, *features) in enumerate(run.loader):
        ratio = (lo + (hi - lo) * torch.rand(1, generator=run.gen).item()) if base else stage_ratios[0]
        ratio = min(max(ratio, 0.05), 0.95)
        image, label = image.to(device), label.to(device)
        features = [f.to(device).float() for f in features] or None
        label_in, removed, editable, target = make_training_batch(label, ratio, data.cfg, data.classes,
                                                                  s.damage_mix, run.gen)
        if s.loss_on == "all":
            target = label
        with autocast(device):
            logits = run.ddp_model(image, label_in, removed, editable, features=features)
        loss = weighted_cross_entropy(logits, target, data.weights)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
        run.opt.step()
        tot += loss.item() * len(image)
        n += len(image)
        if run.proc.main:
            run.progress(Step(stage, epoch + 1, epochs, step + 1, steps, tot / n,
                              n * run.proc.world / (time.time() - t0)))
    train_loss = tot / max(n, 1)
    run.sched.step(train_loss)
    info["epoch"] = epoch + 1
    info["elapsed"] = time.time() - run.t_start
    return EpochDone(stage, epoch + 1, train_loss, run.opt.param_groups[0]["lr"], time.time() - t0,
                     n * run.proc.world / (time.time() - t0))


def _train_stage(run: _Run) -> bool:
    """Train the current stage's remaining epochs; False when stopped for --max-minutes (the state saved)."""
    s, info, proc = run.s, run.info, run.proc
    stage = run.stages[info["stage"]]
    base = stage == "base"
    epochs = s.epochs if base else s.finetune_epochs
    stage_ratios = list(s.ratios) if base else [float(stage.split("-")[1])]
    stage_t0 = last_save = time.time()  # a resumed stage gets its whole share of the budget again
    while info["epoch"] < epochs:
        epoch = _run_epoch(run, stage, epochs, stage_ratios)
        budget_spent = time.time() - stage_t0 > run.stage_seconds(stage)
        last = info["epoch"] == epochs or budget_spent
        if proc.main and (last or (s.val_every and info["epoch"] % s.val_every == 0)):
            vals = [validate(run.model, run.data.val_set, r, run.data.classes, proc.device, s.batch_size)
                    for r in stage_ratios]
            epoch = replace(epoch, val=vals)
            run.final_val = {ratio_key(v["ratio"]): v for v in vals}
        run.log(epoch)
        stop = run.out_of_time() and not (last and info["stage"] == len(run.stages) - 1)
        if proc.distributed:  # rank 0's clock decides for all, or the ranks could part ways
            flags = torch.tensor([stop, budget_spent], dtype=torch.int32, device=proc.device)
            dist.broadcast(flags, 0)
            stop, budget_spent = bool(flags[0]), bool(flags[1])
        # the state is saved when stopping and at most every SAVE_EVERY_S (a GPU epoch takes seconds);
        # a finished stage is saved by _end_stage
        if proc.main and (stop or (time.time() - last_save > SAVE_EVERY_S and not last)):
            _save_state(run.state_dir, run.model, run.opt, run.sched, info)
            last_save = time.time()
        if proc.distributed:
            dist.barrier()
        if stop:
            return False
        if budget_spent:
            break
    return True


def _end_stage(run: _Run) -> None:
    """Write the finished stage's weights, then set up the next stage and save the state."""
    s, info, proc, model, out = run.s, run.info, run.proc, run.model, run.out
    stage = run.stages[info["stage"]]
    info.setdefault("epochs_run", {})[stage] = info["epoch"]
    if proc.main:
        if stage == "base":
            save_weights(model, out / "base.safetensors")
            if s.finetune_epochs == 0:
                for r in s.ratios:
                    name = f"ratio-{ratio_key(r)}.safetensors"
                    info["files"][ratio_key(r)] = {"file": name,
                                                   "sha256": save_weights(model, out / name, half=True)}
        else:
            r = stage.split("-")[1]
            name = f"ratio-{r}.safetensors"
            info["files"][r] = {"file": name, "sha256": save_weights(model, out / name, half=True)}
    if proc.distributed:
        dist.barrier()  # the other ranks read base.safetensors next
    info["stage"] += 1
    info["epoch"] = 0
    if info["stage"] < len(run.stages):
        # every fine-tune starts from the base weights (or the init bank's model of its ratio), with a
        # fresh optimiser at the fine-tune rate
        next_ratio = float(run.stages[info["stage"]].split("-")[1])
        init_bank = run.data.init_bank
        if init_bank and next_ratio in init_bank.ratios:
            _load_init(model, init_bank, next_ratio, run.data.weights)
        else:
            model.load_state_dict(load_file(str(out / "base.safetensors")))
        run.opt, run.sched = _optimiser(model, s.finetune_lr, s.weight_decay)
    if proc.main:
        _save_state(run.state_dir, model, run.opt, run.sched, info)
    if proc.distributed:
        dist.barrier()


def _write_bank_manifest(run: _Run) -> None:
    """The trained bank's manifest: its models, how they were trained, their validation scores."""
    s, data, init_bank = run.s, run.data, run.data.init_bank
    Manifest(
        data.cfg, data.classes, run.info["files"],
        trained_on={"dataset": Path(s.data).name, "split": s.train_split, "images": len(data.train_set)},
        training={"preset": s.preset, "epochs": s.epochs, "finetune_epochs": s.finetune_epochs,
                  "epochs_run": run.info.get("epochs_run", {}), "budget_minutes": s.budget_minutes,
                  "batch_size": s.batch_size, "lr": s.lr, "seconds": round(time.time() - run.t_start, 1),
                  "world_size": run.proc.world, "damage_mix": dict(zip(DAMAGE_KINDS, s.damage_mix)),
                  "min_crop": s.min_crop, "views": data.train_set.views,
                  "init_manifest_sha256": init_bank.manifest_sha256 if init_bank else None},
        val=run.final_val, encoder=data.encoder_entry or None,
    ).write(run.out)


def train_bank(s: TrainSettings, progress: Callable[[object], None] | None = None) -> TrainResult:
    """Train a bank as `s` says (resumable, on one device or under torchrun), then fit and calibrate it."""
    progress = progress or (lambda e: None)
    proc = _setup_process(s)
    _check_settings(s)
    out = Path(s.out)
    data = _prepare_data(s, proc, out, progress)
    run = _start_run(s, proc, data, out, progress)
    finished = True
    while run.info["stage"] < len(run.stages):
        if not _train_stage(run):
            finished = False
            break
        _end_stage(run)

    if finished and proc.main:
        _write_bank_manifest(run)
        finish_bank(out, data.classes, data.train_pairs, data.val_pairs, proc.device, s.calibrate_images, s.seed,
                    progress)
    if proc.distributed:
        dist.barrier()
    return TrainResult(out, run.stages[: run.info["stage"]], time.time() - run.t_start, finished, run.final_val)
