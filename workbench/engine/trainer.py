"""Training loop: AdamW (backbone lr x 0.1; engine/optim.py), warmup + poly/step, gradient clipping, AMP (bf16 on
CPU or CUDA, fp16 on CUDA), gradient accumulation (solver.accumulate: a step is that many micro-batches, normalised
as one), activation checkpointing (solver.checkpoint_activations), evaluation during training with the best
checkpoint kept (solver.eval_period, engine/best.py), checkpoints that resume bit-for-bit, a NaN guard that names
the step, term and images, and DistributedDataParallel when started by `torchrun` (WORLD_SIZE > 1).

Run directory layout: config.yaml (resolved), metrics.jsonl (one line per logged step, one per evaluation during
training), TensorBoard event files (the same records; engine/tracking.py), last.pt (resumable;
a hard link to the newest of the `solver.keep_checkpoints` last_step<N>.pt), best.pt (with solver.eval_period),
model_final.pt (weights + config + step), nan_batch_step<N>.pt (only when a loss went non-finite). An existing
run directory is never silently reused: pass `resume=True` (continue; metrics.jsonl is cut back to the checkpoint's
step) or `overwrite=True` (its run files are deleted first).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from workbench.config import RunConfig
from workbench.config_file import ConfigError, dump_yaml, to_dict
from workbench.device import cpu_has_native_bf16
from workbench.engine.accumulate import accumulate_gradients, effective_batch
from workbench.engine.best import Best, PeriodicEvaluation, check_best_metric
from workbench.engine.checkpoint import load_latest, rng_state, save_checkpoint, save_rotating, set_rng_state
from workbench.engine.run_folder import (RunDirectoryError, check_run_dir, open_run_dir, prepare_run_dir,  # noqa: F401
                                        releases_run_locks, truncate_jsonl, write_jsonl)
from workbench.engine.optim import freeze_parameters, param_groups
from workbench.engine.schedule import lr_factor, scaled_lr
from workbench.engine.tracking import open_tensorboard
from workbench.errors import WorkbenchError
from workbench.model import MultiTaskMask2Former, build_model

if TYPE_CHECKING:
    from workbench.engine.evaluate import EvalResult


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


class EpochBatches:
    """Deterministic batches: epoch e is a permutation drawn from (seed, e); a step takes the next
    batch_size x accumulate images (the effective batch), cut into `accumulate` micro-batches of batch_size, of
    which rank r takes every world-th item.

    Starting at any global step reproduces the same batches, which is what makes resume exact; 4 micro-batches
    of 1 hold the same images as one batch of 4.
    """

    def __init__(self, dataset_len: int, batch_size: int, seed: int, dist_info: DistInfo, accumulate: int = 1) -> None:
        if batch_size % dist_info.world_size:
            raise ConfigError(f"solver.batch_size {batch_size} must be divisible by the {dist_info.world_size} "
                              f"processes")
        self.per_process = batch_size // dist_info.world_size
        self.steps_per_epoch = dataset_len // (batch_size * accumulate)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"dataset has {dataset_len} images, fewer than one effective batch of solver.batch_size "
                              f"{batch_size} x solver.accumulate {accumulate}")
        self.batch_size, self.accumulate, self.seed, self.dist = batch_size, accumulate, seed, dist_info
        self.dataset_len = dataset_len
        self._perm, self._perm_epoch = torch.empty(0, dtype=torch.long), -1

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._perm_epoch != epoch:  # one draw per epoch, not per step
            gen = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.dataset_len, generator=gen), epoch
        return self._perm

    def micro_batches(self, step: int) -> list[list[int]]:
        """This rank's dataset indices of each of the step's `accumulate` micro-batches."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        size = self.batch_size * self.accumulate
        chunk = self.permutation(epoch)[offset * size : (offset + 1) * size]
        return [chunk[a * self.batch_size : (a + 1) * self.batch_size][self.dist.rank :: self.dist.world_size].tolist()
                for a in range(self.accumulate)]

    def indices(self, step: int) -> list[int]:
        """This rank's dataset indices of the whole step (all micro-batches, in order)."""
        return [i for micro in self.micro_batches(step) for i in micro]


def iterate(dataset, batches: EpochBatches, start: int, stop: int,
            num_workers: int) -> Iterator[tuple[int, list[list]]]:
    """(step, micro-batches) for steps [start, stop), one DataLoader per epoch so `set_epoch` reaches the workers."""
    from torch.utils.data import DataLoader

    from workbench.data.dataset import collate

    step = start
    while step < stop:
        epoch = batches.epoch_of(step)
        epoch_end = min(stop, (epoch + 1) * batches.steps_per_epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        plan = [micro for s in range(step, epoch_end) for micro in batches.micro_batches(s)]
        loader = DataLoader(dataset, batch_sampler=plan, collate_fn=collate, num_workers=num_workers)
        micro_batches = []
        for batch in loader:
            micro_batches.append(batch)
            if len(micro_batches) == batches.accumulate:
                yield step, micro_batches
                micro_batches = []
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
    best: Best | None = None  # with solver.eval_period: the best evaluation (best.pt), resumed runs' included
    best_metrics: EvalResult | None = None  # its evaluation when this process ran it (else: evaluate best.pt)


@releases_run_locks
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
    if info.is_main:
        check_run_dir(run_dir, resume, overwrite)  # a refused reuse reads no weights
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(dev)
    report = None
    if cfg.model.weights and not resume:  # a resumed run restores last.pt: never reload the weights over it
        from workbench.pretrained.training import start_from_weights

        report = start_from_weights(model, cfg)  # before the run folder: weights that do not fit delete nothing
    if info.is_main:  # (other processes would see the main one's new files; torchrun stops them if it fails)
        open_run_dir(run_dir, resume, overwrite)  # created and locked (until train returns) only now
        if report is not None:
            from workbench.pretrained.training import REPORT_FILE

            report.save(run_dir / REPORT_FILE)
    freeze_parameters(model, solver.freeze)
    if solver.compile:  # in place: state_dict keys and checkpoints stay as without (the pixel decoder's op is eager)
        model.backbone.compile()
        model.decoder.compile()
    if solver.checkpoint_activations != "none":
        model.checkpoint_activations(solver.checkpoint_activations)
    lr = scaled_lr(solver, batch_size=solver.effective_batch)
    optimizer = torch.optim.AdamW(param_groups(model, solver, lr.lr), lr=lr.lr, weight_decay=solver.weight_decay,
                                  fused=dev.type in ("cpu", "cuda"))  # one kernel for all tensors: 0.3x the time
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(solver, s))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    batches = EpochBatches(len(dataset), solver.batch_size, cfg.seed, info, solver.accumulate)
    start, best = 0, None
    if resume:
        ckpt, ckpt_path = load_latest(run_dir, map_location=dev)
        if ckpt["config"]["model"] != to_dict(cfg.model):
            raise ConfigError(f"{ckpt_path}: its model config differs from the one given; refusing to resume")
        saved_accumulate = ckpt["config"].get("solver", {}).get("accumulate", 1)
        if saved_accumulate != solver.accumulate:
            raise ConfigError(f"{ckpt_path}: trained with solver.accumulate {saved_accumulate}, the config says "
                              f"{solver.accumulate}: the effective batch, its lr and the data order would change "
                              f"mid-run; resume with solver.accumulate: {saved_accumulate}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        start = int(ckpt["step"])
        best = Best.from_dict(ckpt.get("best"))
        if best is not None and best.metric != solver.best_metric:
            print(f"[workbench] solver.best_metric is now {solver.best_metric} (was {best.metric}): the next "
                  f"evaluation replaces best.pt", flush=True)
            best = None
        if info.is_main:
            truncate_jsonl(run_dir / "metrics.jsonl", start)
    elif info.is_main:
        dump_yaml(cfg, run_dir / "config.yaml")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    if info.is_main:
        if getattr(dataset, "schema", None) is not None:  # export and predict name the classes from it
            from workbench.engine.run_categories import save_category_names

            from workbench.data.carried_attributes import carried_attributes

            save_category_names(run_dir, dataset.schema.category_names, str(getattr(dataset, "where", cfg.data.train)),
                                carried_attributes(getattr(dataset, "records", ()), dataset.schema.attribute_names))
        print(f"[workbench] device {dev}, {info.world_size} process(es); effective batch {solver.effective_batch} = "
              f"solver.batch_size {solver.batch_size} ({batches.per_process} per process) x solver.accumulate "
              f"{solver.accumulate}; {lr.message}", flush=True)
    periodic = PeriodicEvaluation(cfg, run_dir) if info.is_main and solver.eval_period and cfg.data.val else None
    tensorboard = (open_tensorboard(run_dir, cfg.log, purge_step=start + 1 if resume else None)
                   if info.is_main else None)
    net: nn.Module = model
    if info.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    def on_nonfinite(losses: dict, micro: list[dict]) -> None:
        check_finite(losses, step, micro, run_dir if info.is_main else None)

    def autocast():
        return torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)

    stop = min(solver.max_iter, max_iter or solver.max_iter)
    bar = tqdm(total=stop, initial=start, desc="train", disable=not (progress and info.is_main), dynamic_ncols=True)
    started, last, best_metrics, postfix = time.perf_counter(), {}, None, {}
    waited, data_seconds, since_record = started, 0.0, 0  # data_time: time spent waiting for batches
    for step, micro_batches in iterate(dataset, batches, start, stop, solver.num_workers):
        data_seconds += time.perf_counter() - waited
        since_record += 1
        net.train()
        optimizer.zero_grad(set_to_none=True)
        values = accumulate_gradients(net, micro_batches, step_generator(cfg.seed, step),
                                      effective_batch(model, micro_batches, info.world_size), scaler, autocast,
                                      on_nonfinite)
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
            postfix.update({k.replace("loss_", ""): f"{v:.3f}" for k, v in last.items()})
            if done % solver.log_period == 0 or done == stop:
                record = {"step": done, "lr": max(g["lr"] for g in optimizer.param_groups),
                          "time": time.perf_counter() - started, "data_time": data_seconds / since_record, **last}
                data_seconds, since_record = 0.0, 0
                write_jsonl(run_dir / "metrics.jsonl", record)
                if tensorboard is not None:
                    tensorboard.training(record)
            if periodic is not None and (done % solver.eval_period == 0 or done == stop):
                metrics, new_best, record = periodic(model, done, best, tensorboard)
                write_jsonl(run_dir / "metrics.jsonl", record)
                if new_best is not None:
                    best, best_metrics = new_best, metrics
                postfix.update({solver.best_metric: f"{metrics.scalars().get(solver.best_metric, float('nan')):.3g}",
                                "best": f"{best.value:.3g}@{best.step}" if best else "-"})
            bar.set_postfix(postfix, refresh=False)
            if done % solver.checkpoint_period == 0 or done == stop:
                save_rotating(run_dir, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                        "rng": rng_state(), "step": done, "config": to_dict(cfg),
                                        "best": best.to_dict() if best else {}},
                              keep=solver.keep_checkpoints)
        waited = time.perf_counter()
    bar.close()
    if tensorboard is not None:
        tensorboard.close()
    if info.is_main:
        save_checkpoint(run_dir / "model_final.pt", {"model": model.state_dict(), "config": to_dict(cfg), "step": stop})
    seconds = time.perf_counter() - started
    return TrainResult(model, run_dir, stop, seconds, lr.lr, last, best, best_metrics)


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
    from workbench.engine.preflight import check_images_exist, check_kinds_agree, check_model_matches_data

    train_schema, where = getattr(dataset, "schema", None), getattr(dataset, "where", "(training dataset)")
    if train_schema is not None:
        check_model_matches_data(cfg.model, train_schema, where)
    if getattr(dataset, "records", None) is not None:
        check_images_exist([r["file_name"] for r in dataset.records], str(where))
    if cfg.data.val and Path(cfg.data.val).exists():
        from workbench.data.segmentation import open_dataset

        val = open_dataset(cfg.data.val, cfg.model.task, cfg.data.image_root or None)  # reads no image
        check_model_matches_data(cfg.model, val.schema, cfg.data.val)
        if train_schema is not None:
            check_kinds_agree(train_schema, str(where), val.schema, cfg.data.val)
        check_images_exist([r["file_name"] for r in val.records], cfg.data.val)
    if len(dataset) < cfg.solver.effective_batch:
        accumulated = f" x solver.accumulate {cfg.solver.accumulate}" if cfg.solver.accumulate > 1 else ""
        raise ConfigError(f"{getattr(dataset, 'where', None) or cfg.data.train or '(training dataset)'}: "
                          f"{len(dataset)} training images, fewer than "
                          f"one batch of solver.batch_size {cfg.solver.batch_size}{accumulated}: lower "
                          f"solver.batch_size{' or solver.accumulate' if accumulated else ''} or add images")
    if cfg.solver.eval_period:
        if not cfg.data.val:
            raise ConfigError(f"solver.eval_period {cfg.solver.eval_period} evaluates on data.val, which is empty: "
                              f"set data.val or solver.eval_period: 0")
        check_best_metric(cfg.solver.best_metric, cfg.model)


def build_train_dataset(cfg: RunConfig):
    """data.train for the model's task: COCO-with-attributes (instance), COCO panoptic (any task) or a semantic
    label folder (semantic), by its format (data/segmentation.py's open_dataset)."""
    from workbench.data.segmentation import open_dataset
    from workbench.data.transforms import build_augmentation

    if not cfg.data.train:
        raise ConfigError("data.train is empty: set the training data (COCO-with-attributes or COCO panoptic JSON, "
                          "or a semantic label folder) in the config")
    dataset = open_dataset(cfg.data.train, cfg.model.task, cfg.data.image_root or None,
                           augmentation=build_augmentation(cfg.augment, train=True), seed=cfg.seed,
                           keep_empty=cfg.data.keep_empty, cache_images=cfg.data.cache_images)
    if getattr(dataset, "images", None) is not None:
        megabytes = sum(image.nbytes for image in dataset.images) / 2**20
        print(f"[workbench] data.cache_images: {len(dataset.images)} training images decoded and kept in memory "
              f"({megabytes:.0f} MiB)", flush=True)
    return dataset
