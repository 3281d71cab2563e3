"""`make demo`: the main job on the embedded default.

Synthesises the shapes dataset as labelme files, converts and validates it, trains the small default model
(CPU, or the GPU when there is one) evaluating on the held-out split every DEMO_EVAL_PERIOD steps, and prints
the table of the best checkpoint (best.pt, by segm AP). The component
report (each model part alone on synthetic tensors) runs first.
"""
from __future__ import annotations

import time
from pathlib import Path

from workbench.config import AugmentConfig, DataConfig, EvalConfig, LossConfig, ModelConfig, RunConfig, SolverConfig

DEMO_TRAIN_IMAGES = 600
DEMO_VAL_IMAGES = 100
DEMO_MAX_ITER = 2000
DEMO_FIGURES = ("panoptic/PQ", "panoptic/PQ_th", "panoptic/PQ_st", "joint_panoptic/PQ", "semantic/mIoU",
                "panoptic_attribute_accuracy/color", "panoptic_attribute_accuracy/size",
                "panoptic_attribute_accuracy/tone")
DEMO_EVAL_PERIOD = 250  # evaluation during training; the figures are best.pt's (solver.best_metric: segm AP)


def demo_dirs(task: str = "instance") -> tuple[str, str]:
    """`workbench demo --task`'s default (run folder, data folder): runs/demo and data/generated/demo for
    instance, with the suffix `_<task>` for panoptic and semantic."""
    suffix = "" if task == "instance" else f"_{task}"
    return f"runs/demo{suffix}", f"data/generated/demo{suffix}"


def demo_data(data_dir: Path, task: str = "instance") -> tuple[str, str]:
    """The (train, val) sources `prepare_data` writes for `task` (synthetic_splits' layout). Semantic trains on
    the panoptic file too: label PNGs cannot hold attributes, segments can (one target per class, its attributes
    where the class's segments agree)."""
    name = "coco.json" if task == "instance" else "panoptic/panoptic.json"
    return str(data_dir / "train" / name), str(data_dir / "val" / name)


def demo_config(data_dir: Path, max_iter: int = DEMO_MAX_ITER, task: str = "instance", seed: int = 0) -> RunConfig:
    """The small default: tiny backbone, hidden 64, 20 queries, 3 decoder layers, 128^2 shapes; for panoptic and
    semantic the same shapes in front of sky / ground stuff bands (attribute `tone`). `seed` is the training seed
    (initialisation, batch order, augmentation, point sampling); the data are the same for every seed."""
    from workbench.data.synthetic import synthetic_schema

    train, val = demo_data(data_dir, task)
    model = ModelConfig.tiny(
        **synthetic_schema(stuff=task != "instance").model_fields(), task=task, hidden_dim=64, num_queries=20,
        nheads=4, dim_feedforward=256, dec_layers=3, enc_layers=1, enc_dim_feedforward=128, mask_dim=64,
        test_topk=50, loss=LossConfig(num_points=1024),
    )
    # Trained from scratch, so the backbone learns at the full lr (upstream's 0.1 is for pretrained weights).
    # base_lr is for the reference batch of 16: the linear scaling rule gives 1e-3 at batch 8.
    solver = SolverConfig(base_lr=2e-3, batch_size=8, max_iter=max_iter, warmup_iters=50, warmup_factor=0.01,
                          backbone_lr_multiplier=1.0, checkpoint_period=500, log_period=25,
                          eval_period=min(DEMO_EVAL_PERIOD, max_iter), best_metric="segm/AP")
    return RunConfig(model=model, solver=solver,
                     data=DataConfig(train=train, val=val, cache_images=True),  # 600 small PNGs: 28 MiB decoded
                     augment=AugmentConfig.synthetic(), eval=EvalConfig(), seed=seed)


def prepare_data(data_dir: Path, train_images: int = DEMO_TRAIN_IMAGES, val_images: int = DEMO_VAL_IMAGES,
                 task: str = "instance") -> None:
    """labelme shapes -> COCO-with-attributes (or COCO panoptic, or semantic label PNGs) -> validated, for both
    splits (different seeds)."""
    from workbench.data.synthetic import synthetic_splits

    synthetic_splits(data_dir, train_images, val_images, task="instance" if task == "instance" else "panoptic")
    print(f"[demo] {train_images} train and {val_images} held-out images, converted and validated", flush=True)


def check_demo_arguments(out, data_dir, device: str | None, max_iter: int, task: str = "instance",
                         seed: int = 0) -> None:
    """Refuse what cannot run before the component report, the data and the training start (minutes of work)."""
    from workbench.device import resolve_device
    from workbench.errors import UsageError

    if task not in ("instance", "panoptic", "semantic"):
        raise UsageError(f"workbench demo: --task {task}: choose instance, panoptic or semantic")
    if max_iter < 1:
        raise UsageError(f"workbench demo: --max-iter {max_iter}: give at least 1 training step")
    if seed < 0:
        raise UsageError(f"workbench demo: --seed {seed}: give a seed >= 0")
    for flag, path in (("--out", out), ("--data-dir", data_dir)):
        if Path(path).exists() and not Path(path).is_dir():
            raise UsageError(f"workbench demo: {flag} {path} is a file; give a folder")
    try:
        resolve_device(device or "auto")
    except (ValueError, RuntimeError) as err:  # an unknown spec, or a GPU that is not there
        raise UsageError(f"workbench demo: --device: {err}") from err


def run_demo(out: str = "runs/demo", data_dir: str = "data/generated/demo", device: str | None = None,
             max_iter: int = DEMO_MAX_ITER, components: bool = True, train_images: int = DEMO_TRAIN_IMAGES,
             val_images: int = DEMO_VAL_IMAGES, progress: bool = True, task: str = "instance", seed: int = 0) -> int:
    from workbench.engine.pipeline import train_and_evaluate

    check_demo_arguments(out, data_dir, device, max_iter, task, seed)
    start = time.perf_counter()
    if components:
        from workbench.harness.runners import run_all

        report = run_all()
        print(report, flush=True)
        if not report.ok:
            return 1
    data_dir = Path(data_dir)
    prepare_data(data_dir, train_images, val_images, task)
    cfg = demo_config(data_dir, max_iter=max_iter, task=task, seed=seed)
    _, metrics = train_and_evaluate(cfg, out, device=device, progress=progress, overwrite=True)  # a demo reruns
    minutes = (time.perf_counter() - start) / 60
    if task != "instance":
        figures = [f"{k} {100 * v:.1f}%" if "accuracy" in k else f"{k} {v:.1f}"  # accuracies are fractions
                   for k, v in metrics.scalars().items() if k in DEMO_FIGURES]
        print(f"[demo] {minutes:.1f} min; " + "; ".join(figures)
              + f"; outputs in {out}/ (metrics.json, loss_curve.png, overlays/)", flush=True)
        return 0
    ap = metrics.segm.get("AP") or 0.0
    accuracies = {name: a.accuracy or 0.0 for name, a in metrics.attributes.items()}
    print(f"[demo] {minutes:.1f} min; segm AP {ap:.1f}; attribute accuracy "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in accuracies.items())
          + f" ({metrics.checkpoint.get('file')}, step {metrics.checkpoint.get('step')})"
          + f"; outputs in {out}/ (metrics.json, loss_curve.png, overlays/)", flush=True)
    return 0
