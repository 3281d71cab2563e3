"""What the notebooks share, so each of them stays a few calls long: a small synthetic dataset, a small run
config, and training with a live loss plot."""
from __future__ import annotations

import os
from pathlib import Path

from workbench.config import AugmentConfig, DataConfig, EvalConfig, LossConfig, ModelConfig, RunConfig, SolverConfig

__all__ = ["display_figure", "small_run_config", "small_shapes_data", "train_live", "use_threads"]


def use_threads(threads: int | None = None):
    """This kernel's thread policy (`workbench.threads`): `threads` intra-op threads (default WORKBENCH_THREADS,
    else torch's). Returns the `ThreadPolicy`; its `describe()` says whether the OpenMP wait policy is in effect
    (only when workbench was imported before torch in this kernel)."""
    from workbench.threads import apply

    return apply(threads)


use_threads()  # importing the notebooks' helper applies WORKBENCH_THREADS


def small_shapes_data(work_dir: str | os.PathLike, train_images: int = 32, val_images: int = 8,
                      image_size: int = 64, progress: bool = False) -> tuple[Path, Path]:
    """Synthetic shapes as labelme files -> COCO-with-attributes -> validated, for a train and a val split
    (different seeds) under `work_dir`/{train,val}. Returns the two coco.json paths. Raises if validation
    finds an error. Deterministic: rerunning with the same arguments rewrites the same files."""
    from workbench.data.synthetic import synthetic_splits

    return synthetic_splits(work_dir, train_images, val_images, image_size, progress=progress)


def small_run_config(train_json: str | os.PathLike, val_json: str | os.PathLike = "", max_iter: int = 30,
                     image_size: int = 64, batch_size: int = 4, base_lr: float = 4e-3, seed: int = 0,
                     eval_cfg: EvalConfig | None = None, **model_overrides) -> RunConfig:
    """`ModelConfig.tiny` (hidden 32, 10 queries, 2 decoder layers) on the shapes schema, CPU-sized.

    base_lr is for the reference batch of 16 (scaled by batch_size / 16 as usual); log every 5 steps so the
    live plot has points."""
    from workbench.data.synthetic import synthetic_schema

    values = dict(loss=LossConfig(num_points=256))
    values.update(model_overrides)
    model = ModelConfig.tiny(**synthetic_schema().model_fields(), **values)
    solver = SolverConfig(base_lr=base_lr, batch_size=batch_size, max_iter=max_iter,
                          warmup_iters=min(10, max(1, max_iter // 5)), warmup_factor=0.1,
                          checkpoint_period=max(1, max_iter), log_period=max(1, min(5, max_iter // 4)))
    return RunConfig(model=model, solver=solver, data=DataConfig(train=str(train_json), val=str(val_json)),
                     augment=AugmentConfig.synthetic(image_size=image_size), eval=eval_cfg or EvalConfig(),
                     seed=seed, device="cpu")


def display_figure(fig, handle=None):
    """Show a matplotlib Figure in a notebook (or update the display `handle`); returns the handle. Outside
    IPython it does nothing and returns None."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return None
    if get_ipython() is None:
        return None
    if handle is None:
        return display(fig, display_id=True)
    handle.update(fig)
    return handle


def train_live(cfg: RunConfig, run_dir: str | os.PathLike, chunks: int = 5, dataset=None, progress: bool = True,
               resume: bool = False, device: str | None = None):
    """`engine.trainer.train` in `chunks` pieces (each resumes the last exactly), redrawing the loss curve
    from metrics.jsonl after each piece. Returns the final `TrainResult` (same weights as one call).

    resume: continue the run in `run_dir` from its last.pt up to cfg.solver.max_iter (the pieces cover the steps
    it lacks; none when it is already there); otherwise a run already in `run_dir` is replaced (a notebook cell
    is meant to be rerun)."""
    import dataclasses

    from workbench.drawing.loss_curve import loss_curve_figure
    from workbench.engine.checkpoint import load_checkpoint
    from workbench.engine.trainer import train

    total = cfg.solver.max_iter
    start = int(load_checkpoint(Path(run_dir) / "last.pt")["step"]) if resume else 0
    chunks = max(1, min(chunks, total - start))
    bounds = [start + round((total - start) * (k + 1) / chunks) for k in range(chunks)]
    handle, result, seconds = None, None, 0.0
    for k, stop in enumerate(bounds):
        result = train(cfg, run_dir, dataset=dataset, resume=resume or k > 0, overwrite=k == 0 and not resume,
                       progress=progress, max_iter=stop, device=device)
        seconds += result.seconds
        handle = display_figure(loss_curve_figure(Path(run_dir) / "metrics.jsonl"), handle)
    return dataclasses.replace(result, seconds=seconds)
