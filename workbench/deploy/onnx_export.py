"""The model's inference graph as ONNX, and the pre/post-processing around it.

Graph: `image` float32 (B, 3, H, W), already normalised ((pixel - pixel_mean) / pixel_std, padded with zeros
bottom/right to multiples of `size_divisibility`) -> `class_logits` (B, Q, C+1), `mask_logits` (B, Q, H/4, W/4)
and one `attribute_logits.<name>` per attribute head, in the config's order: (B, Q, K+1) softmax logits for a
single-label group, (B, Q, K) sigmoid logits for a multi-label one. B, H and W are dynamic.
Post-processing (top-k, mask resizing, thresholds) stays outside the graph: `instances_from_outputs` runs the
package's `instance_inference` on the arrays any ONNX runtime returns.

Exporter: torch.onnx.export(dynamo=True), torch's default (the TorchScript exporter warns that it is
deprecated). It traces through `torch.export` with symbolic sizes (H = size_divisibility x a dimension), so Python
code that would fix a size is an export error; a size read back from a tensor (`torch.as_tensor(shapes)`,
`.tolist()`) is still frozen silently, which is why the model keeps level sizes as Python values and the test
runs a second size. The multi-scale deformable attention exports as its PyTorch reference (GridSample, opset
>= 16), not the compiled kernels; `MSDeformAttn` switches while `torch.onnx.is_in_onnx_export()`.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from workbench.config import ModelConfig
from workbench.data.io import write_bytes_atomic
from workbench.errors import UsageError
from workbench.model import MultiTaskMask2Former
from workbench.model.meta_arch import pad_batch
from workbench.model.postprocess import instance_inference

OPSET = 18
DEFORMABLE_ATTENTION_NOTE = ("deformable attention: exported as the PyTorch reference (GridSample, opset "
                             f"{OPSET}); the compiled workbench._C kernels are not part of the graph")


def output_names(cfg: ModelConfig) -> list[str]:
    """class_logits, mask_logits, then attribute_logits.<name> per attribute in `cfg.attributes` order."""
    return ["class_logits", "mask_logits", *[f"attribute_logits.{a.name}" for a in cfg.attributes]]


class InferenceGraph(nn.Module):
    """What is exported: normalised image (B, 3, H, W) -> (class_logits, mask_logits, *attribute_logits) of the
    final decoder stage, as `MultiTaskMask2Former.forward_raw` computes them (after its normalisation)."""

    def __init__(self, model: MultiTaskMask2Former) -> None:
        super().__init__()
        self.model = model
        self.names = [a.name for a in model.cfg.attributes]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pixel = self.model.pixel_decoder(self.model.backbone(image))
        out = self.model.decoder(pixel.multi_scale_features, pixel.mask_features)
        return (out.class_logits, out.mask_logits, *[out.attribute_logits[n] for n in self.names])


def prepare_images(images: Sequence[np.ndarray | torch.Tensor], cfg: ModelConfig) -> np.ndarray:
    """uint8/float RGB images (3, H_i, W_i) in 0..255 -> the graph's input, float32 (B, 3, H, W): padded to the
    batch's size rounded up to `cfg.size_divisibility` and to at least twice it, by `pad_batch`, the function
    `MultiTaskMask2Former.forward` pads with (a 32 px image becomes 64: the graph's minimum), and normalised;
    padding is 0 after normalisation."""
    tensors = [torch.as_tensor(np.asarray(im)).float() for im in images]
    padded = pad_batch(tensors, cfg)
    mean = torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.pixel_std).view(1, 3, 1, 1)
    return ((padded - mean) / std).numpy()


def instances_from_outputs(outputs: Sequence[np.ndarray], cfg: ModelConfig,
                           image_sizes: Sequence[tuple[int, int]]) -> list[dict]:
    """The graph's outputs (in `output_names(cfg)` order) for a batch -> one prediction dict per image, exactly
    what `MultiTaskMask2Former.forward` returns in eval mode (see `instance_inference`). `image_sizes`: each
    image's (H, W) before padding."""
    class_logits, mask_logits, *attribute_logits = (torch.from_numpy(np.asarray(o)) for o in outputs)
    if len(attribute_logits) != len(cfg.attributes):
        raise ValueError(f"expected {2 + len(cfg.attributes)} outputs {output_names(cfg)}, got {len(outputs)}")
    padded_size = tuple(int(s) * 4 for s in mask_logits.shape[-2:])
    results = []
    for b, size in enumerate(image_sizes):
        results.append(instance_inference(
            class_logits[b], {a.name: logits[b] for a, logits in zip(cfg.attributes, attribute_logits)},
            mask_logits[b], padded_size, tuple(size), tuple(size), topk=cfg.test_topk,
            multi_label={a.name: a.threshold for a in cfg.attributes if a.multi}))
    return results


@contextlib.contextmanager
def _quiet_constant_folding():
    """onnxscript's optimizer warns once per multi-output node (Split, LayerNormalization) that it does not fold
    it: dozens of lines that say nothing about the graph. Its other messages still show."""
    log = logging.getLogger("onnxscript.optimizer._constant_folding")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    input_name: str
    output_names: list[str]
    example_size: tuple[int, int]
    opset: int
    note: str


def metadata(cfg: ModelConfig) -> dict[str, str]:
    """What a consumer needs to prepare inputs and read outputs, stored in the model's metadata_props."""
    return {
        "workbench.pixel_mean": json.dumps(list(cfg.pixel_mean)),
        "workbench.pixel_std": json.dumps(list(cfg.pixel_std)),
        "workbench.size_divisibility": str(cfg.size_divisibility),
        "workbench.num_classes": str(cfg.num_classes),
        "workbench.attributes": json.dumps({a.name: {"values": list(a.values), "kind": a.kind,
                                                     **({"threshold": a.threshold} if a.multi else {})}
                                            for a in cfg.attributes}),
        "workbench.test_topk": str(cfg.test_topk),
        "workbench.outputs": json.dumps(output_names(cfg)),
    }


def export_onnx(model: MultiTaskMask2Former, out_path: str | os.PathLike,
                example_size: tuple[int, int] | None = None, opset: int = OPSET) -> OnnxExport:
    """Export `model`'s inference graph to one self-contained .onnx file (weights inside, metadata_props from
    `metadata`). example_size (H, W), multiples of size_divisibility (default 4x it, square), only feeds the
    tracer: the graph accepts any batch and any multiple of size_divisibility."""
    if opset < 16:
        raise UsageError(f"opset {opset}: GridSample (the deformable attention) needs opset >= 16")
    cfg = model.cfg
    d = cfg.size_divisibility
    example_size = example_size or (4 * d, 4 * d)
    if example_size[0] % d or example_size[1] % d or min(example_size) < 2 * d:
        raise UsageError(f"example_size (--example-size) {example_size} must be multiples of size_divisibility "
                         f"{d}, at least {2 * d}")
    out_path = Path(out_path)
    graph = InferenceGraph(copy.deepcopy(model).cpu()).eval()  # the caller's model stays where it is
    example = torch.zeros(2, 3, *example_size)
    blocks_h = torch.export.Dim("height_blocks", min=2, max=1024)
    blocks_w = torch.export.Dim("width_blocks", min=2, max=1024)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad(), _quiet_constant_folding():
        program = torch.onnx.export(
            graph, (example,), None, dynamo=True, opset_version=opset, input_names=["image"],
            output_names=output_names(cfg), dynamic_shapes={"image": {0: batch, 2: d * blocks_h, 3: d * blocks_w}},
            external_data=False, verbose=False)
    proto = program.model_proto
    for key, value in metadata(cfg).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    write_bytes_atomic(out_path, proto.SerializeToString())  # nothing half-written at out_path if saving fails
    return OnnxExport(out_path, "image", output_names(cfg), tuple(example_size), opset, DEFORMABLE_ATTENTION_NOTE)
