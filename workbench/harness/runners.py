"""Run each component alone on synthetic tensors and say, in a table, what came out.

Each runner returns a `ComponentReport` whose `checks` are the facts a person would otherwise eyeball
(shapes, finiteness, the planted assignment recovered, ...). `make demo` and notebook 02 print these.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from workbench.config import ModelConfig
from workbench.harness.synthetic import (
    attribute_ambiguous_problem,
    planted_problem,
    random_features,
    random_images,
    synthetic_batch,
)
from workbench.model.backbones import build_backbone
from workbench.model.matcher import HungarianMatcher
from workbench.model.meta_arch import build_criterion, build_decoder, build_matcher, build_pixel_decoder

DEFAULT_ATTRIBUTES = {"color": ["red", "green", "blue"], "size": ["small", "medium", "large"]}


@dataclass
class ComponentReport:
    name: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    seconds: float = 0.0
    data: dict = field(default_factory=dict)  # raw tensors for notebooks (cost matrices, losses, ...)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())

    def row(self, key: str, value) -> None:
        self.rows.append((key, value if isinstance(value, str) else repr(value)))

    def __str__(self) -> str:
        width = max([len(k) for k, _ in self.rows] + [len(k) for k in self.checks] + [10])
        lines = [f"== {self.name}  [{'ok' if self.ok else 'FAILED'}, {self.seconds * 1000:.0f} ms]"]
        lines += [f"  {k:<{width}}  {v}" for k, v in self.rows]
        lines += [f"  {'check: ' + k:<{width + 7}}  {'pass' if v else 'FAIL'}" for k, v in self.checks.items()]
        return "\n".join(lines)


@dataclass
class HarnessReport:
    components: list[ComponentReport]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.components)

    def __getitem__(self, name: str) -> ComponentReport:
        return next(c for c in self.components if c.name == name)

    def __str__(self) -> str:
        verdict = "all components ok" if self.ok else "SOME COMPONENTS FAILED"
        return "\n\n".join(str(c) for c in self.components) + f"\n\n{verdict}"


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _range(t: torch.Tensor) -> str:
    return f"[{t.min().item():.3g}, {t.max().item():.3g}]"


def default_config(**overrides) -> ModelConfig:
    return ModelConfig.tiny(num_classes=3, attributes=DEFAULT_ATTRIBUTES, **overrides)


def run_pixel_decoder(cfg: ModelConfig, batch: int = 2, size: int = 64, seed: int = 0) -> ComponentReport:
    rep, start = ComponentReport("pixel decoder"), time.perf_counter()
    torch.manual_seed(seed)
    channels = build_backbone(cfg.backbone).out_channels
    decoder = build_pixel_decoder(cfg, channels).eval()
    feats = random_features(channels, batch, size, size, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = decoder(feats)
    for name, f in feats.items():
        rep.row(f"in {name}", _shape(f))
    rep.row("mask_features", f"{_shape(out.mask_features)} range {_range(out.mask_features)}")
    for i, m in enumerate(out.multi_scale_features):
        rep.row(f"multi_scale[{i}]", _shape(m))
    rep.checks["mask features at stride 4"] = tuple(out.mask_features.shape) == (batch, cfg.mask_dim, size // 4, size // 4)
    rep.checks["strides 32, 16, 8"] = [m.shape[-1] for m in out.multi_scale_features] == [size // 32, size // 16, size // 8]
    rep.checks["finite"] = bool(torch.isfinite(out.mask_features).all())
    rep.seconds = time.perf_counter() - start
    return rep


def run_decoder(cfg: ModelConfig, batch: int = 2, size: int = 64, seed: int = 0) -> ComponentReport:
    rep, start = ComponentReport("transformer decoder"), time.perf_counter()
    torch.manual_seed(seed)
    decoder = build_decoder(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(batch, cfg.hidden_dim, size // s, size // s, generator=g) for s in (32, 16, 8)]
    mask_features = torch.randn(batch, cfg.mask_dim, size // 4, size // 4, generator=g)
    with torch.no_grad():
        out = decoder(maps, mask_features, return_aux=True, return_attention=True)
    rep.row("class_logits", _shape(out.class_logits))
    for name, logits in out.attribute_logits.items():
        rep.row(f"attribute_logits[{name}]", _shape(logits))
    rep.row("mask_logits", _shape(out.mask_logits))
    rep.row("aux predictions", str(len(out.aux)))
    masked = out.aux[-1].attention_mask.float().mean().item() if out.aux else float("nan")
    rep.row("masked attention (last layer)", f"{100 * masked:.0f}% of positions")
    rep.checks["class head C+1"] = out.class_logits.shape[-1] == cfg.num_classes + 1
    rep.checks["attribute heads K+1"] = all(
        out.attribute_logits[a.name].shape[-1] == a.num_values + 1 for a in cfg.attributes)
    rep.checks["one aux per layer"] = len(out.aux) == cfg.dec_layers
    rep.checks["attribute logits differ between images"] = all(
        not torch.allclose(v[0], v[1]) for v in out.attribute_logits.values()) if batch > 1 else True
    rep.seconds = time.perf_counter() - start
    return rep


def run_matcher(cfg: ModelConfig, seed: int = 0) -> ComponentReport:
    rep, start = ComponentReport("Hungarian matcher"), time.perf_counter()
    k = {a.name: a.num_values for a in cfg.attributes}
    problem = planted_problem(num_queries=cfg.num_queries, num_classes=cfg.num_classes, attributes=k, seed=seed)
    matcher = build_matcher(cfg)
    found = matcher(problem.outputs, problem.targets, generator=torch.Generator().manual_seed(seed))
    for b, ((q, t), (pq, pt)) in enumerate(zip(found, problem.assignment)):
        rep.row(f"image {b} query->target", ", ".join(f"{i}->{j}" for i, j in zip(q.tolist(), t.tolist())))
    rep.checks["planted permutation recovered"] = all(
        torch.equal(q, pq) and torch.equal(t, pt) for (q, t), (pq, pt) in zip(found, problem.assignment))
    if "color" in k:  # the ambiguous case has one attribute, "color", with the config's cost weights
        ambiguous = attribute_ambiguous_problem()
        for label, scale in (("with attribute cost", cfg.attribute_cost_weight), ("attribute cost 0", 0.0)):
            m = HungarianMatcher(cfg.loss.class_weight, cfg.loss.mask_weight, cfg.loss.dice_weight,
                                 {"color": cfg.attribute("color").weight * scale}, cfg.loss.num_points)
            rep.data[label] = m(ambiguous.outputs, ambiguous.targets)[0][1].tolist()
            rep.row(f"attribute-ambiguous, {label}", rep.data[label])
        rep.checks["attribute cost decides the ambiguous case"] = rep.data["with attribute cost"] == [0, 1]
    coords = torch.rand(1, 64, 2, generator=torch.Generator().manual_seed(seed))
    rep.data["cost_matrix"] = matcher.cost_matrix(problem.outputs, problem.targets, 0, coords)
    rep.data["assignment"] = found
    rep.seconds = time.perf_counter() - start
    return rep


def run_criterion(cfg: ModelConfig, seed: int = 0) -> ComponentReport:
    rep, start = ComponentReport("set criterion"), time.perf_counter()
    k = {a.name: a.num_values for a in cfg.attributes}
    criterion = build_criterion(cfg)
    problem = planted_problem(num_queries=cfg.num_queries, num_classes=cfg.num_classes, attributes=k, seed=seed)
    noisy = planted_problem(num_queries=cfg.num_queries, num_classes=cfg.num_classes, attributes=k, seed=seed,
                            confidence=0.5)
    gen = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    good = criterion(problem.outputs, problem.targets, generator=gen())
    bad = criterion(noisy.outputs, noisy.targets, generator=gen())
    for key in good:
        rep.row(key, f"{good[key].item():.4f}   (uncertain predictions: {bad[key].item():.4f})")
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 32, 32, dtype=torch.bool),
              "attributes": {n: torch.zeros(0, dtype=torch.long) for n in k}} for _ in problem.targets]
    empty_losses = criterion(problem.outputs, empty, generator=gen())
    rep.row("empty targets", ", ".join(f"{key}={v.item() + 0.0:.3g}" for key, v in empty_losses.items()))
    rep.checks["confident < uncertain for every term"] = all(good[key] < bad[key] for key in good)
    rep.checks["empty targets: zero mask/dice, finite class"] = (
        empty_losses["loss_mask"].item() == 0 and empty_losses["loss_dice"].item() == 0
        and bool(torch.isfinite(empty_losses["loss_ce"])))
    rep.data["losses"] = {key: v.item() for key, v in good.items()}
    rep.seconds = time.perf_counter() - start
    return rep


def run_model(cfg: ModelConfig, seed: int = 0, size: int = 64) -> ComponentReport:
    """The whole model: one training step (losses) and inference (per-image predictions)."""
    from workbench.model import build_model

    rep, start = ComponentReport("full model"), time.perf_counter()
    torch.manual_seed(seed)
    model = build_model(cfg)
    k = {a.name: a.num_values for a in cfg.attributes}
    batch = synthetic_batch(cfg.num_classes, k, batch=2, size=size, seed=seed)
    model.train()
    losses = model(batch, generator=torch.Generator().manual_seed(seed))
    total = sum(losses.values())
    total.backward()
    rep.row("parameters", f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M")
    rep.row("train: loss terms", str(len(losses)))
    rep.row("train: total loss", f"{total.item():.3f}")
    model.eval()
    with torch.no_grad():
        preds = model(batch)
        raw = model.forward_raw(random_images(2, size, size, seed))
    rep.row("eval: instances per image", [len(p["scores"]) for p in preds])
    rep.row("eval: keys", sorted(preds[0]))
    rep.checks["train returns 0-dim losses"] = all(v.dim() == 0 for v in losses.values())
    rep.checks["eval returns one result per image"] = len(preds) == len(batch)
    rep.checks["attribute logits differ between images"] = all(
        not torch.allclose(v[0], v[1]) for v in raw.attribute_logits.values())
    rep.seconds = time.perf_counter() - start
    return rep


def run_all(cfg: ModelConfig | None = None, seed: int = 0) -> HarnessReport:
    cfg = cfg or default_config()
    return HarnessReport([
        run_pixel_decoder(cfg, seed=seed),
        run_decoder(cfg, seed=seed),
        run_matcher(cfg, seed=seed),
        run_criterion(cfg, seed=seed),
        run_model(cfg, seed=seed),
    ])
