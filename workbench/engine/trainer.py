"""Training loop: AdamW (backbone lr x 0.1), warmup + poly/step, gradient clipping, AMP (bf16 on CPU or CUDA,
fp16 on CUDA), checkpoints that resume bit-for-bit, a NaN guard that names the step, term and images, and
DistributedDataParallel when started by `torchrun` (WORLD_SIZE > 1).

Run directory layout: config.yaml (resolved), metrics.jsonl (one line per logged step), TensorBoard event files
(the same records; engine/tracking.py), last.pt (resumable;
a hard link to the newest of the `solver.keep_checkpoints` last_step<N>.pt), model_final.pt (weights +
config), nan_batch_step<N>.pt (only when a loss went non-finite). An existing run directory is never
silently reused: pass `resume=True` (continue; metrics.jsonl is cut back to the checkpoint's step) or
`overwrite=True` (its run files are deleted first).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from workbench.config import RunConfig, SolverConfig
from workbench.config_file import ConfigError, dump_yaml, to_dict
from workbench.data.io import remove_stale_temps
from workbench.device import cpu_has_native_bf16
from workbench.engine.checkpoint import load_latest, rng_state, save_checkpoint, save_rotating, set_rng_state
from workbench.engine.schedule import lr_factor, scaled_lr
from workbench.engine.tracking import open_tensorboard
from workbench.errors import WorkbenchError
from workbench.model import MultiTaskMask2Former, build_model

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.Embedding)
NO_DECAY_NAMES = ("level_embed", "relative_position_bias_table")  # parameters that are embeddings in all but type


class NonFiniteLossError(WorkbenchError, FloatingPointError):
    pass


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


HEAD_MODULES = ("decoder.class_head", "decoder.attribute_heads.")  # what the user's categories/attributes define


def freeze_parameters(model: MultiTaskMask2Former, freeze: str) -> int:
    """solver.freeze: "backbone" or "trunk" (all but HEAD_MODULES) get requires_grad=False; returns how many."""
    frozen = 0
    for name, param in model.named_parameters():
        if (freeze == "backbone" and name.startswith("backbone.")) or \
                (freeze == "trunk" and not name.startswith(HEAD_MODULES)):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def param_groups(model: MultiTaskMask2Former, solver: SolverConfig, lr: float) -> list[dict]:
    """Backbone at lr x backbone_lr_multiplier, heads (HEAD_MODULES) at lr x head_lr_multiplier; no weight
    decay on norm layers, embeddings and Swin's relative position bias tables (as upstream); frozen parameters
    are left out."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            group_lr = lr * (solver.backbone_lr_multiplier if module_name.startswith("backbone.") else
                             solver.head_lr_multiplier if module_name.startswith(HEAD_MODULES) else 1.0)
            no_decay = isinstance(module, NORM_TYPES) or name in NO_DECAY_NAMES
            decay = 0.0 if no_decay else solver.weight_decay
            groups.setdefault((group_lr, decay), []).append(param)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


class EpochBatches:
    """Deterministic batches: epoch e is a permutation drawn from (seed, e); rank r takes every world-th item.

    Starting at any global step reproduces the same batches, which is what makes resume exact.
    """

    def __init__(self, dataset_len: int, batch_size: int, seed: int, dist_info: DistInfo) -> None:
        if batch_size % dist_info.world_size:
            raise ConfigError(f"solver.batch_size {batch_size} must be divisible by the {dist_info.world_size} "
                              f"processes")
        self.per_process = batch_size // dist_info.world_size
        self.steps_per_epoch = dataset_len // batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"dataset has {dataset_len} images, fewer than one batch of solver.batch_size "
                              f"{batch_size}")
        self.batch_size, self.seed, self.dist = batch_size, seed, dist_info
        self.dataset_len = dataset_len
        self._perm, self._perm_epoch = torch.empty(0, dtype=torch.long), -1

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._perm_epoch != epoch:  # one draw per epoch, not per step
            gen = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.dataset_len, generator=gen), epoch
        return self._perm

    def indices(self, step: int) -> list[int]:
        epoch, offset = divmod(step, self.steps_per_epoch)
        chunk = self.permutation(epoch)[offset * self.batch_size : (offset + 1) * self.batch_size]
        return chunk[self.dist.rank :: self.dist.world_size].tolist()


def iterate(dataset, batches: EpochBatches, start: int, stop: int, num_workers: int) -> Iterator[tuple[int, list]]:
    """(step, batch) for steps [start, stop), one DataLoader per epoch so `set_epoch` reaches the workers."""
    from torch.utils.data import DataLoader

    from workbench.data.dataset import collate

    step = start
    while step < stop:
        epoch = batches.epoch_of(step)
        epoch_end = min(stop, (epoch + 1) * batches.steps_per_epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        plan = [batches.indices(s) for s in range(step, epoch_end)]
        loader = DataLoader(dataset, batch_sampler=plan, collate_fn=collate, num_workers=num_workers)
        for batch in loader:
            yield step, batch
            step += 1


def step_generator(seed: int, step: int) -> torch.Generator:
    """Point-sampling randomness of one step, independent of everything before it (exact resume)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def check_finite(losses: dict[str, torch.Tensor], step: int, batch: list[dict], run_dir: Path | None) -> None:
    """Stop on a NaN/inf loss: say which step, terms and images, and save the batch for inspection. The loop
    calls it only when its one host sync per step saw a non-finite value."""
    bad = [k for k, v in losses.items() if not torch.isfinite(v)]
    if not bad:
        return
    ids = [item.get("image_id", i) for i, item in enumerate(batch)]
    saved = ""
    if run_dir is not None:
        path = run_dir / f"nan_batch_step{step}.pt"
        save_checkpoint(path, {"step": step, "terms": bad, "image_ids": ids,
                               "batch": [{"image": b["image"], "instances": b.get("instances", {})} for b in batch]})
        saved = f"; batch saved to {path}"
    raise NonFiniteLossError(f"non-finite loss at step {step}: terms {bad}; image ids {ids}{saved}")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """`solver.amp` -> the autocast dtype on `device` (None: float32). bf16 runs on CUDA and on CPUs: with
    AVX512-BF16 or AMX its products take half the time of float32 ones. fp16 is CUDA only (its loss scaling is
    CUDA's GradScaler). A setting that cannot run here is an error, never float32 in silence."""
    if amp == "off":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if device.type == "cpu" and amp == "bf16":
        return torch.bfloat16
    raise ConfigError(f"solver.amp: {amp!r} cannot run on {device.type}: use 'bf16' (CPU or CUDA), 'fp16' (CUDA) "
                      "or 'off'")


@dataclass
class TrainResult:
    model: MultiTaskMask2Former
    run_dir: Path
    steps: int
    seconds: float
    lr: float
    last_losses: dict[str, float]


class RunDirectoryError(WorkbenchError, FileExistsError):
    pass


RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "last_step*.pt", "model_final.pt", "metrics.json",
             "metrics_*.json", "loss_curve.png", "nan_batch_step*.pt", "train.json", "pretrained_report.json",
             "events.out.tfevents.*", "categories.json")


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to reuse a run directory silently; with `overwrite` delete its run files (only those: the folder
    may hold the user's other files); always remove temp files a killed write left behind."""
    existing = sorted({p.name for pattern in RUN_FILES[:5] for p in run_dir.glob(pattern)})
    if existing and not resume and not overwrite:
        raise RunDirectoryError(f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue "
                                "it or --overwrite to start again there (or choose another --out)")
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue the run or start it again")
    if overwrite:
        for pattern in RUN_FILES:
            for p in run_dir.glob(pattern):
                p.unlink()
    if run_dir.is_dir():
        for p in remove_stale_temps(run_dir):
            print(f"[workbench] removed {p.name}, left by a write that was killed", flush=True)


def truncate_jsonl(path: Path, step: int) -> None:
    """Keep the lines of metrics.jsonl up to `step` (a resumed run rewrites the steps after its checkpoint). A
    last line cut short (the run was killed while appending it) is dropped with a note; an unreadable line before
    it is an error naming file and line."""
    from workbench.data.problems import DataError, Problem

    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines) and not line.endswith("\n"):
                print(f"[workbench] {path}:{number}: dropped a line cut short by the killed run", flush=True)
                continue
            raise DataError([Problem("bad_log_line", f"{path}:{number}", f"not a JSON record ({err.msg}); the run's "
                                     "log is damaged: fix or delete that line to resume")]) from err
        if record.get("step", 0) <= step:
            kept.append(line)
    if len(kept) != len(lines):
        from workbench.data.io import write_bytes_atomic

        write_bytes_atomic(path, "".join(kept).encode())


def write_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def train(cfg: RunConfig, run_dir: str | os.PathLike, dataset=None, device: str | None = None,
          resume: bool = False, progress: bool = True, max_iter: int | None = None,
          overwrite: bool = False) -> TrainResult:
    """Train `cfg` into `run_dir`. `dataset` defaults to cfg.data.train with cfg.augment's training recipe;
    `max_iter` stops early (the schedule still follows cfg.solver.max_iter), used by resume tests.
    An existing run in `run_dir` needs `resume` or `overwrite` (see the module docstring)."""
    from workbench.device import resolve_device  # looked up per call: tests stand in for it
    from workbench.threads import apply as apply_thread_policy

    apply_thread_policy()  # WORKBENCH_THREADS; the OpenMP wait policy was set when workbench was imported
    run_dir = Path(run_dir)
    cfg = absolute_data_paths(cfg)
    dev = resolve_device(device if device is not None else cfg.device)
    amp_dtype = autocast_dtype(cfg.solver.amp, dev)  # before anything is written or started
    info = init_distributed(dev)
    if dev.type == "cuda" and info.world_size > 1:
        dev = torch.device("cuda", info.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    solver = cfg.solver
    if info.is_main and amp_dtype == torch.bfloat16 and dev.type == "cpu" and not cpu_has_native_bf16():
        print("[workbench] solver.amp: bf16 on a CPU without bfloat16 instructions (AVX512-BF16/AMX): torch "
              "emulates it, expect it slower than float32", flush=True)
    if dataset is None:
        dataset = build_train_dataset(cfg)
    check_data(cfg, dataset)
    if info.is_main:  # (other processes would see the main one's new files; torchrun stops them if it fails)
        prepare_run_dir(run_dir, resume, overwrite)
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(dev)
    if cfg.model.weights and not resume:  # a resumed run restores last.pt: never reload the weights over it
        from workbench.pretrained.training import start_from_weights

        start_from_weights(model, cfg, run_dir if info.is_main else None)
    freeze_parameters(model, solver.freeze)
    if solver.compile:  # in place: state_dict keys and checkpoints stay as without (the pixel decoder's op is eager)
        model.backbone.compile()
        model.decoder.compile()
    lr = scaled_lr(solver)
    optimizer = torch.optim.AdamW(param_groups(model, solver, lr.lr), lr=lr.lr, weight_decay=solver.weight_decay,
                                  fused=dev.type in ("cpu", "cuda"))  # one kernel for all tensors: 0.3x the time
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(solver, s))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    batches = EpochBatches(len(dataset), solver.batch_size, cfg.seed, info)
    start = 0
    if resume:
        ckpt, ckpt_path = load_latest(run_dir, map_location=dev)
        if ckpt["config"]["model"] != to_dict(cfg.model):
            raise ConfigError(f"{ckpt_path}: its model config differs from the one given; refusing to resume")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        start = int(ckpt["step"])
        if info.is_main:
            truncate_jsonl(run_dir / "metrics.jsonl", start)
    elif info.is_main:
        dump_yaml(cfg, run_dir / "config.yaml")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    if info.is_main:
        if getattr(dataset, "schema", None) is not None:  # export and predict name the classes from it
            from workbench.engine.run_categories import save_category_names

            save_category_names(run_dir, dataset.schema.category_names, str(getattr(dataset, "where", cfg.data.train)))
        print(f"[workbench] device {dev}, {info.world_size} process(es); {lr.message}", flush=True)
    tensorboard = (open_tensorboard(run_dir, cfg.log, purge_step=start + 1 if resume else None)
                   if info.is_main else None)
    net: nn.Module = model
    if info.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    stop = min(solver.max_iter, max_iter or solver.max_iter)
    bar = tqdm(total=stop, initial=start, desc="train", disable=not (progress and info.is_main), dynamic_ncols=True)
    started, last = time.perf_counter(), {}
    waited, data_seconds, since_record = started, 0.0, 0  # data_time: time spent waiting for batches
    for step, batch in iterate(dataset, batches, start, stop, solver.num_workers):
        data_seconds += time.perf_counter() - waited
        since_record += 1
        net.train()
        with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            losses = net(batch, generator=step_generator(cfg.seed, step))
        total = sum(losses.values())
        # One host sync per step (it stalls a GPU): every term and the total, for the NaN guard and the log.
        values = dict(zip([*losses, "total"], torch.stack([v.detach().float() for v in losses.values()]
                                                           + [total.detach().float()]).tolist()))
        if not all(math.isfinite(v) for v in values.values()):
            check_finite(losses, step, batch, run_dir if info.is_main else None)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if solver.clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), solver.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        done = step + 1
        last = {k: v for k, v in values.items() if not k[-1].isdigit()}  # the final stage's terms, the total
        if info.is_main:
            bar.update(1)
            bar.set_postfix({k.replace("loss_", ""): f"{v:.3f}" for k, v in last.items()}, refresh=False)
            if done % solver.log_period == 0 or done == stop:
                record = {"step": done, "lr": max(g["lr"] for g in optimizer.param_groups),
                          "time": time.perf_counter() - started, "data_time": data_seconds / since_record, **last}
                data_seconds, since_record = 0.0, 0
                write_jsonl(run_dir / "metrics.jsonl", record)
                if tensorboard is not None:
                    tensorboard.training(record)
            if done % solver.checkpoint_period == 0 or done == stop:
                save_rotating(run_dir, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                        "rng": rng_state(), "step": done, "config": to_dict(cfg)},
                              keep=solver.keep_checkpoints)
        waited = time.perf_counter()
    bar.close()
    if tensorboard is not None:
        tensorboard.close()
    if info.is_main:
        save_checkpoint(run_dir / "model_final.pt", {"model": model.state_dict(), "config": to_dict(cfg)})
    seconds = time.perf_counter() - started
    return TrainResult(model, run_dir, stop, seconds, lr.lr, last)


def absolute_data_paths(cfg: RunConfig) -> RunConfig:
    """Data paths resolved against the current folder, so a run directory works from anywhere later
    (`workbench eval --run`, the inspector in a notebook started elsewhere)."""
    def resolve(path: str) -> str:
        return str(Path(path).resolve()) if path else path

    data = cfg.data
    return dataclasses.replace(cfg, data=dataclasses.replace(
        data, train=resolve(data.train), val=resolve(data.val), image_root=resolve(data.image_root)))


def check_data(cfg: RunConfig, dataset) -> None:
    """Before any work (nothing written yet): the model's heads must fit the training (and validation) data's
    schema, and the training data must fill one batch."""
    from workbench.data.schema import schema_of_coco
    from workbench.engine.preflight import check_model_matches_data

    if getattr(dataset, "schema", None) is not None:
        check_model_matches_data(cfg.model, dataset.schema, getattr(dataset, "where", "(training dataset)"))
    if cfg.data.val and Path(cfg.data.val).is_file():
        check_model_matches_data(cfg.model, schema_of_coco(cfg.data.val), cfg.data.val)
    if len(dataset) < cfg.solver.batch_size:
        raise ConfigError(f"{getattr(dataset, 'where', None) or cfg.data.train or '(training dataset)'}: "
                          f"{len(dataset)} training images, fewer than "
                          f"one batch of solver.batch_size {cfg.solver.batch_size}: lower solver.batch_size or add "
                          f"images")


def build_train_dataset(cfg: RunConfig):
    from workbench.data.dataset import CocoAttributeDataset
    from workbench.data.transforms import build_augmentation

    if not cfg.data.train:
        raise ConfigError("data.train is empty: set the COCO-with-attributes training file in the config")
    dataset = CocoAttributeDataset(cfg.data.train, cfg.data.image_root or None,
                                   augmentation=build_augmentation(cfg.augment, train=True), seed=cfg.seed,
                                   keep_empty=cfg.data.keep_empty, cache_images=cfg.data.cache_images)
    if dataset.images is not None:
        megabytes = sum(image.nbytes for image in dataset.images) / 2**20
        print(f"[workbench] data.cache_images: {len(dataset.images)} training images decoded and kept in memory "
              f"({megabytes:.0f} MiB)", flush=True)
    return dataset
