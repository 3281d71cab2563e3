"""`python -m workbench.d2.train --config-file cfg.yaml [--register NAME JSON IMAGE_ROOT]
[--register-panoptic NAME JSON PNG_ROOT IMAGE_ROOT] [--num-gpus N] [KEY VALUE ...]`

detectron2's train_net for the multi-task model: an upstream Mask2Former YAML (COCO instance or panoptic, ADE20K
semantic) plus MODEL.MULTITASK keys (and META_ARCHITECTURE "MultiTaskMaskFormer"), our mappers (INPUT.
DATASET_MAPPER_NAME picks instance, panoptic or semantic targets) and evaluators (by the dataset's evaluator
type: COCO AP + attributes, or PQ + attributes + joint PQ + mIoU), AdamW with the backbone lr multiplier and
full-model gradient clipping as upstream, and its WarmupPolyLR schedule. `--register` / `--register-panoptic`
(repeatable) register a COCO-with-attributes / COCO panoptic with attributes file in every worker. Multi-GPU goes
through detectron2's `launch` (one process per GPU; choose GPUs by exporting CUDA_VISIBLE_DEVICES before starting).

Before anything is built or trained (`config_from_args`): META_ARCHITECTURE must be ours, NUM_CLASSES and the
attributes must fit the registered datasets, MODEL.DEVICE must exist here, AMP is turned off with one printed line
where training is not on CUDA (upstream's YAMLs enable it; detectron2's AMP trainer needs CUDA), and
MODEL.WEIGHTS must be a file or a URL this machine can fetch (upstream's `detectron2://` R-50 is a download).
"""
from __future__ import annotations

import itertools
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from torch import nn

from workbench.d2.config import add_multitask_config
from workbench.d2.data import MAPPER_TASKS, MultiTaskDatasetMapper, check_cfg_matches_datasets, register_multitask_coco
from workbench.d2.evaluation import MultiTaskCOCOEvaluator
from workbench.d2.segment_data import MultiTaskSegmentMapper, register_multitask_coco_panoptic
from workbench.d2.segment_evaluation import MultiTaskPanopticEvaluator

__all__ = ["Trainer", "mapper_class", "amp_off_without_cuda", "argument_parser", "build_optimizer", "check_weights",
           "config_from_args", "main", "setup"]

META_ARCHITECTURE = "MultiTaskMaskFormer"

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm1d,
          nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(cfg, model: nn.Module) -> list[dict]:
    """One group per parameter: lr x SOLVER.BACKBONE_MULTIPLIER inside `backbone`, WEIGHT_DECAY_NORM on
    normalisation layers, WEIGHT_DECAY_EMBED on embeddings, WEIGHT_DECAY elsewhere (upstream's grouping)."""
    groups, seen = [], set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            lr, decay = cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY
            if module_name == "backbone" or module_name.startswith("backbone."):
                lr *= cfg.SOLVER.BACKBONE_MULTIPLIER
            if isinstance(module, _NORMS):
                decay = cfg.SOLVER.WEIGHT_DECAY_NORM
            elif isinstance(module, nn.Embedding):
                decay = cfg.SOLVER.WEIGHT_DECAY_EMBED
            groups.append({"params": [param], "lr": lr, "weight_decay": decay})
    return groups


def _with_full_model_clipping(optimizer_class: type, max_norm: float) -> type:
    """`optimizer_class` whose step first clips the norm of all gradients together to `max_norm`."""

    class FullModelClipped(optimizer_class):
        def step(self, closure=None):
            params = itertools.chain.from_iterable(group["params"] for group in self.param_groups)
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            return super().step(closure)

    FullModelClipped.__name__ = f"FullModelClipped{optimizer_class.__name__}"
    return FullModelClipped


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZER "ADAMW" | "SGD"; SOLVER.CLIP_GRADIENTS with CLIP_TYPE "full_model" clips the whole
    model's gradient norm (upstream), other clip types are detectron2's per-parameter clipping."""
    from detectron2.solver.build import maybe_add_gradient_clipping

    name = cfg.SOLVER.OPTIMIZER
    if name == "ADAMW":
        optimizer_class, kwargs = torch.optim.AdamW, {}
    elif name == "SGD":
        optimizer_class, kwargs = torch.optim.SGD, {"momentum": cfg.SOLVER.MOMENTUM}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER = {name!r}: expected 'ADAMW' or 'SGD'")
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        optimizer_class = _with_full_model_clipping(optimizer_class, clip.CLIP_VALUE)
        optimizer = optimizer_class(param_groups(cfg, model), cfg.SOLVER.BASE_LR, **kwargs)
    else:
        optimizer = maybe_add_gradient_clipping(cfg, optimizer_class)(param_groups(cfg, model), cfg.SOLVER.BASE_LR,
                                                                      **kwargs)
    return optimizer


def mapper_class(cfg) -> type:
    """INPUT.DATASET_MAPPER_NAME's mapper: instance targets or panoptic / semantic ones (data.MAPPER_TASKS)."""
    return MultiTaskDatasetMapper if MAPPER_TASKS.get(cfg.INPUT.DATASET_MAPPER_NAME) == "instance" \
        else MultiTaskSegmentMapper


class Trainer(DefaultTrainer):
    """DefaultTrainer with the multi-task mappers, evaluators, optimizer and upstream's poly lr schedule."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=mapper_class(cfg).from_config(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """Test time reads the image only (any dataset, any mapper name): MultiTaskDatasetMapper's resize."""
        return build_detection_test_loader(cfg, dataset_name, mapper=MultiTaskDatasetMapper.from_config(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """The dataset's evaluator type: "coco_panoptic_seg" (register_multitask_coco_panoptic) -> PQ, attributes,
        joint PQ and mIoU of what the model outputs; "coco" (register_multitask_coco) -> COCO AP + attributes."""
        from detectron2.data import MetadataCatalog

        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        if MetadataCatalog.get(dataset_name).get("evaluator_type") == "coco_panoptic_seg":
            return MultiTaskPanopticEvaluator(dataset_name, attribute_names=cfg.MODEL.MULTITASK.ATTRIBUTE_NAMES,
                                              output_dir=output_folder)
        return MultiTaskCOCOEvaluator(dataset_name, scoring=cfg.MODEL.MULTITASK.SCORING, output_dir=output_folder,
                                      max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        """SOLVER.LR_SCHEDULER_NAME "WarmupPolyLR" (upstream's ADE20K / Cityscapes YAMLs) from detectron2's DeepLab
        project, as upstream's train_net; detectron2's own schedulers otherwise."""
        if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR":
            from detectron2.projects.deeplab import build_lr_scheduler

            return build_lr_scheduler(cfg, optimizer)
        return super().build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument("--register", nargs=3, action="append", default=[], metavar=("NAME", "JSON", "IMAGE_ROOT"),
                        help="register a COCO-with-attributes file as dataset NAME (repeatable)")
    parser.add_argument("--register-panoptic", nargs=4, action="append", default=[],
                        metavar=("NAME", "JSON", "PNG_ROOT", "IMAGE_ROOT"),
                        help="register a COCO panoptic file with attributes as dataset NAME (repeatable)")
    return parser


def amp_off_without_cuda(cfg) -> None:
    """SOLVER.AMP.ENABLED -> False, with one printed line, unless the model trains on an available CUDA device."""
    device = cfg.MODEL.DEVICE
    if cfg.SOLVER.AMP.ENABLED and not (device.startswith("cuda") and torch.cuda.is_available()):
        print(f"[workbench.d2] AMP off: MODEL.DEVICE is {device!r} and detectron2's AMP trainer needs CUDA "
              f"(SOLVER.AMP.ENABLED True -> False); training in float32", flush=True)
        cfg.SOLVER.AMP.ENABLED = False


def check_weights(cfg, resume: bool = False) -> None:
    """MODEL.WEIGHTS must be a local file or a URL fetched now (into detectron2's cache, where the checkpointer
    looks later): an offline `detectron2://` or `https://` download, or a missing file, is an error naming the key
    and the fix before any training. Skipped when empty (random init) or when `resume` finds a checkpoint in
    OUTPUT_DIR (then that one is loaded instead)."""
    path = cfg.MODEL.WEIGHTS
    if not path or (resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))):
        return
    from detectron2.utils.file_io import PathManager

    fix = 'give a local file (`MODEL.WEIGHTS /path/to/model.pkl`) or train from random init (`MODEL.WEIGHTS ""`)'
    try:
        local = PathManager.get_local_path(path)
    except OSError as e:  # URLError / connection refused / no DNS: this machine cannot download it
        raise ConnectionError(f"MODEL.WEIGHTS = {path!r} cannot be downloaded from this machine ({e}): download it "
                              f"where there is network and {fix}") from e
    if not os.path.isfile(local):
        raise FileNotFoundError(f"MODEL.WEIGHTS = {path!r}: no such file; {fix}")


def config_from_args(args):
    """CfgNode from --config-file and the command-line KEY VALUE pairs, datasets registered, checked for this
    machine (module docstring); not frozen."""
    for name, json_file, image_root in args.register:
        register_multitask_coco(name, json_file, image_root)
    for name, json_file, png_root, image_root in args.register_panoptic:
        register_multitask_coco_panoptic(name, json_file, png_root, image_root)
    cfg = get_cfg()
    add_multitask_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.META_ARCHITECTURE != META_ARCHITECTURE:
        raise ValueError(f"MODEL.META_ARCHITECTURE = {cfg.MODEL.META_ARCHITECTURE!r} (upstream's YAMLs say "
                         f"'MaskFormer'): this entry trains the multi-task model; set MODEL.META_ARCHITECTURE "
                         f"{META_ARCHITECTURE!r} in {args.config_file}")
    check_cfg_matches_datasets(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"MODEL.DEVICE = {cfg.MODEL.DEVICE!r}, but this machine has no CUDA GPU: add "
                         f"`MODEL.DEVICE cpu` to the command line to train on the CPU")
    amp_off_without_cuda(cfg)
    check_weights(cfg, resume=args.resume)
    return cfg


def setup(args):
    """`config_from_args`, frozen, then detectron2's default_setup (logging, OUTPUT_DIR/config.yaml, seed)."""
    cfg = config_from_args(args)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
