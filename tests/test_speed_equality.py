"""Speed work must not change numbers: losses, matches, gradients and predictions equal recorded values.

The reference (tests/data/speed_reference.pt) was recorded from the code before the speed changes of issue 14.
Parameters are set by `seeded_init` from each parameter's *name* and shape, not from the construction order,
so reordering modules does not invalidate it. A change that is meant to alter results (a new loss term, a
different cost, another architecture) must re-record it, and say so in its commit:

    PYTHONPATH=. python tests/test_speed_equality.py --record

Cases: the tiny model and upstream's coco_r50 (ResNet-50, 100 queries, 9+1 decoder stages, 12,544 points),
both on a batch of 2 small synthetic images that all have instances.
"""
from __future__ import annotations

import sys
import zlib
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.harness.synthetic import synthetic_batch
from workbench.model.meta_arch import pad_images

REFERENCE = Path(__file__).parent / "data" / "speed_reference.pt"
ATTRIBUTES = {"color": ["red", "green", "blue"], "size": ["small", "medium", "large"]}
CASES = {
    "tiny": dict(preset="tiny", size=64),
    "coco_r50": dict(preset="coco_r50", size=64),
}
# Tolerances, from the worst differences measured between thread counts 1/2/3, ATEN_CPU_CAPABILITY=default/avx2/
# avx512 and the recorded values (AMD EPYC AVX2 and Intel Xeon AVX-512 machines; `.ci/numerics_variants.py`):
# - logits, scores, losses: element-wise, rtol 1e-4 (measured <= 3e-5: the losses' uncertain points come from a
#   top-k over float values, and a point on the edge may swap with its neighbour);
# - fingerprints (`summary`) of large tensors: by norms, never a signed sum against itself. The L1 and L2 norms
#   within NORM_TOL relative, the signed sum within SUM_TOL of the L1 norm (it cancels to ~1e-3 of it), the 64
#   picks within PICK_TOL in relative L2 distance. The random-init ResNet-50's gradient is ill-conditioned (ReLU
#   gates flip under rounding and ~50 layers amplify it): its picks move by up to 0.9 % between thread counts and
#   instruction sets, its norms by 0.2 %; the decoders' by 0.2 % and 0.02 %.
RTOL, ATOL = 1e-4, 1e-5
SUMMARY_TOL = {  # key prefix: (NORM_TOL, SUM_TOL, PICK_TOL)
    "grad/backbone": (1e-2, 1e-3, 5e-2),
    "grad/pixel_decoder": (2e-3, 1e-5, 1e-2),
    "grad/decoder": (2e-3, 1e-5, 1e-2),
    "raw/mask_logits": (1e-4, 1e-5, 1e-4),
}


def seeded_init(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter drawn from a generator seeded by (seed, its name): uniform in +-1/sqrt(fan_in) for
    matrices and kernels, 1 +- 0.1 for norm scales, +-0.1 for other vectors. Buffers keep their defaults."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            u = torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1
            if p.dim() >= 2:
                u = u / max(1, p[0].numel()) ** 0.5
            elif name.endswith("weight"):
                u = 1 + 0.1 * u
            else:
                u = 0.1 * u
            p.copy_(u.to(p.dtype))


def build(case: str, kernel: str = "auto") -> tuple[wb.model.MultiTaskMask2Former, list[dict]]:
    """The case's model (seeded_init) and batch; `kernel` = the deformable attention's backend."""
    from workbench.ops.module import MSDeformAttn

    spec = CASES[case]
    cfg = getattr(wb.ModelConfig, spec["preset"])(num_classes=3, attributes=ATTRIBUTES)
    model = wb.build_model(cfg)
    seeded_init(model)
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.backend = kernel
    attrs = {a.name: a.num_values for a in cfg.attributes}
    batch = synthetic_batch(cfg.num_classes, attrs, batch=2, size=spec["size"], num_targets=3, seed=7)
    assert all(len(item["instances"]["labels"]) for item in batch)  # no empty image: i17 changes those
    return model, batch


def summary(t: torch.Tensor) -> torch.Tensor:
    """A float64 fingerprint: sum, sum of |x|, sum of x^2 and 64 evenly spaced values."""
    t = t.detach().double().flatten()
    picks = t[torch.arange(64) * (t.numel() - 1) // 63]
    return torch.cat([torch.stack([t.sum(), t.abs().sum(), (t * t).sum()]), picks])


def compute(case: str, kernel: str = "auto") -> dict:
    """Raw outputs, predictions (eval), then losses, gradients and every stage's matches (train), all on CPU."""
    torch.manual_seed(0)
    model, batch = build(case, kernel)
    out: dict = {}
    model.eval()
    with torch.no_grad():
        images = pad_images([item["image"] for item in batch], model.cfg.size_divisibility, model.cfg.pixel_mean)
        raw = model.forward_raw(images)
        out["raw/class_logits"] = raw.class_logits.double()
        out["raw/mask_logits"] = summary(raw.mask_logits)
        for name, logits in raw.attribute_logits.items():
            out[f"raw/attr_{name}"] = logits.double()
        for b, pred in enumerate(model(batch)):
            # Kept instances in (query, label) order: coco_r50's random-init scores lie within 1e-3 of each
            # other, so their ranking may swap under float rounding; which instances are kept, and their
            # scores and masks, may not.
            order = (pred["query_index"] * model.cfg.num_classes + pred["labels"]).argsort()
            for key in ("scores", "class_scores", "mask_scores"):
                out[f"pred{b}/{key}"] = pred[key][order].double()
            for key in ("labels", "query_index"):
                out[f"pred{b}/{key}"] = pred[key][order].long()
            masks = pred["masks"][order].flatten(1)
            out[f"pred{b}/mask_areas"] = masks.sum(1).long()
            out[f"pred{b}/mask_checksum"] = (masks.double() * torch.arange(masks.shape[1]).double()).sum(1)
            for name, values in pred["attributes"].items():
                out[f"pred{b}/attr_{name}"] = values[order].long()
                out[f"pred{b}/attr_score_{name}"] = pred["attribute_scores"][name][order].double()
    model.train()
    losses = model(batch, generator=torch.Generator().manual_seed(1))
    for key, value in losses.items():
        out[f"loss/{key}"] = value.detach().double()
    sum(losses.values()).backward()
    for part in ("backbone", "pixel_decoder", "decoder"):
        grads = [p.grad.flatten() for p in getattr(model, part).parameters() if p.grad is not None]
        out[f"grad/{part}"] = summary(torch.cat(grads))
    with torch.no_grad():  # train mode, so the same outputs the losses saw (batch-norm batch statistics)
        outputs = model.forward_raw(images, return_aux=model.cfg.loss.deep_supervision)
        targets = model.targets(batch, tuple(images.shape[-2:]))
        g = torch.Generator().manual_seed(2)
        for s, stage in enumerate([outputs, *outputs.aux]):
            for b, (rows, cols) in enumerate(model.criterion.matcher(stage, targets, generator=g)):
                out[f"match{s}/{b}"] = torch.stack([rows, cols]).long()
    return out


def compare(case: str, got: dict, want: dict) -> list[str]:
    problems = []
    if sorted(got) != sorted(want):
        problems.append(f"{case}: keys differ: only now {sorted(set(got) - set(want))}, "
                        f"only recorded {sorted(set(want) - set(got))}")
    for key in sorted(set(got) & set(want)):
        a, b = got[key], want[key]
        if a.shape != b.shape:
            problems.append(f"{case} {key}: shape {tuple(a.shape)} != recorded {tuple(b.shape)}")
        elif a.dtype == torch.long:
            if not torch.equal(a, b):
                problems.append(f"{case} {key}: {a.tolist()} != recorded {b.tolist()}")
        elif key in SUMMARY_TOL:
            problems += [f"{case} {key}: {p}" for p in summary_problems(a, b, *SUMMARY_TOL[key])]
        elif not torch.allclose(a, b, rtol=RTOL, atol=ATOL):
            err = ((a - b).abs() / (b.abs() + ATOL)).max().item()
            problems.append(f"{case} {key}: max relative difference {err:.2e} > {RTOL}")
    return problems


def summary_problems(got: torch.Tensor, want: torch.Tensor, norm_tol: float, sum_tol: float,
                     pick_tol: float) -> list[str]:
    """Two `summary` fingerprints compared with tolerances scaled to the tensor's magnitude: a signed sum may
    cancel to nothing, so it is held to a fraction of the L1 norm, never to a fraction of itself."""
    l1, l1_want = got[1], want[1]
    l2, l2_want = got[2].sqrt(), want[2].sqrt()
    picks, picks_want = got[3:], want[3:]
    checks = {
        "L1 norm": ((l1 - l1_want).abs() / l1_want, norm_tol),
        "L2 norm": ((l2 - l2_want).abs() / l2_want, norm_tol),
        "sum (relative to the L1 norm)": ((got[0] - want[0]).abs() / l1_want, sum_tol),
        "64 picks (relative L2 distance)": ((picks - picks_want).norm() / picks_want.norm(), pick_tol),
    }
    return [f"{name} moved by {err.item():.2e} > {tol:g}" for name, (err, tol) in checks.items() if not err <= tol]


@pytest.fixture(scope="module")
def reference() -> dict:
    if not REFERENCE.exists():
        pytest.fail(f"{REFERENCE} is missing: record it with `python tests/test_speed_equality.py --record`")
    return torch.load(REFERENCE, weights_only=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_results_equal_recorded(case, reference):
    problems = compare(case, compute(case), reference[case])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_kernel_reproduces_recorded(case, reference):
    """The recorded matches and predictions are not on a knife edge: the PyTorch reference of the deformable
    attention (other float rounding) reproduces them too."""
    problems = compare(case, compute(case, kernel="reference"), reference[case])
    assert not problems, "\n".join(problems)


def test_mask_scores_equal_the_plain_formula():
    """Post-processing resizes each distinct query once and sums on float copies: the same masks as resizing
    every kept query and thresholding, whatever the duplicates, crops and output sizes, and the same scores to
    the last bit where vectorised kernels run (AVX2/AVX-512); scalar kernels (ATEN_CPU_CAPABILITY=default) sum
    the two shapes in another order, one unit in the last place apart."""
    from workbench.model.postprocess import _masks_and_scores, resize_mask_logits

    g = torch.Generator().manual_seed(1)
    for trial in range(12):
        q = int(torch.randint(1, 12, (), generator=g))
        h, w = (int(v) for v in torch.randint(2, 20, (2,), generator=g))
        logits = torch.randn(q, h, w, generator=g) * 4 + float(torch.randn((), generator=g))
        query_index = torch.randint(0, q, (int(torch.randint(0, 20, (), generator=g)),), generator=g)
        image = (4 * h - int(torch.randint(0, 4, (), generator=g)), 4 * w - int(torch.randint(0, 4, (), generator=g)))
        output = (int(torch.randint(5, 90, (), generator=g)), int(torch.randint(5, 90, (), generator=g)))
        output = output if trial % 2 else image
        resized = resize_mask_logits(logits[query_index], (4 * h, 4 * w), image, output)
        want_masks = resized > 0
        want_scores = (resized.sigmoid() * want_masks).flatten(1).sum(1) / (want_masks.flatten(1).sum(1) + 1e-6)
        masks, scores = _masks_and_scores(logits, query_index, (4 * h, 4 * w), image, output)
        assert torch.equal(masks, want_masks), trial
        ulp = torch.finfo(torch.float32).eps * want_scores.abs()
        assert bool(((scores - want_scores).abs() <= ulp).all()), (trial, (scores - want_scores).abs().max())


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_mask_scores_by_chunks_are_bit_identical_to_one_pass(monkeypatch, threads):
    """On a CPU the masks are resized and scored a chunk at a time (`postprocess._mask_chunks`). torch splits a
    one-mask sum over > 32k pixels across threads, which changes its rounding: so every chunk must hold at least
    as many masks as threads (a short tail joins the chunk before it). At this size (64,000 pixels, a multiple
    of the vector width) the chunked scores are bit-identical; see the next test for odd sizes."""
    import workbench.model.postprocess as pp

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(2)
        logits = torch.randn(13, 64, 64, generator=g) * 3
        query_index = torch.cat([torch.arange(13), torch.randint(0, 13, (20,), generator=g)])
        sizes = ((256, 256), (250, 256), (250, 256))  # 64,000 pixels per mask
        monkeypatch.setattr(pp, "CPU_CHUNK_BYTES", 1 << 40)
        assert pp._mask_chunks(13, 256 * 256, torch.device("cpu")) == [slice(0, 13)]
        want = pp._masks_and_scores(logits, query_index, *sizes)
        monkeypatch.setattr(pp, "CPU_CHUNK_BYTES", 1)  # chunks of `threads` masks
        chunks = pp._mask_chunks(13, 256 * 256, torch.device("cpu"))
        assert [c.start for c in chunks] == list(range(0, 13 - threads + 1, threads))[:13 // threads]
        assert chunks[-1].stop == 13 and all(c.stop - c.start >= threads for c in chunks)
        masks, scores = pp._masks_and_scores(logits, query_index, *sizes)
        assert torch.equal(masks, want[0]) and torch.equal(scores, want[1])
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("preset", ["tiny", "coco_r50"])
def test_train_graph_rebuilds_no_view_bases(preset):
    """An in-place op on a view (e.g. ReLU(inplace=True) on a Linear's (B, S, F) output, a view of its 2-D
    product) makes autograd rebuild the whole base in backward: CopySlices / AsStridedBackward nodes, a clone,
    a zero fill and copies of it per layer, for the same values. None may be left in the train graph."""
    cfg = getattr(wb.ModelConfig, preset)(num_classes=3, attributes={"color": ["r", "g", "b"]})
    torch.manual_seed(0)
    model = wb.build_model(cfg).train()
    losses = model(synthetic_batch(3, {"color": 3}, batch=2, size=64), generator=torch.Generator().manual_seed(0))
    seen, todo, names = set(), [sum(losses.values()).grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(n for n, _ in node.next_functions)
    assert "CopySlices" not in names and "AsStridedBackward0" not in names, sorted(names)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_mask_scores_by_chunks_at_odd_sizes_equal_one_pass_to_the_last_bit(monkeypatch, threads):
    """At odd pixel counts the vectorised sigmoid's scalar tail falls at each chunk's end: masks stay identical,
    a score may move by one unit in its last place, no more."""
    import workbench.model.postprocess as pp

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(3)
        for h, w, out in [(73, 145, (289, 577)), (31, 47, (121, 187)), (50, 64, (199, 255))]:
            logits = torch.randn(17, h, w, generator=g) * 4
            query_index = torch.randint(0, 17, (40,), generator=g)
            sizes = ((4 * h, 4 * w), (4 * h - 3, 4 * w - 1), out)
            monkeypatch.setattr(pp, "CPU_CHUNK_BYTES", 1 << 40)
            want_masks, want_scores = pp._masks_and_scores(logits, query_index, *sizes)
            monkeypatch.setattr(pp, "CPU_CHUNK_BYTES", 1)
            masks, scores = pp._masks_and_scores(logits, query_index, *sizes)
            assert torch.equal(masks, want_masks)
            ulp = torch.finfo(torch.float32).eps * want_scores.abs().clamp(min=torch.finfo(torch.float32).tiny)
            assert bool(((scores - want_scores).abs() <= ulp).all()), (h, w, (scores - want_scores).abs().max())
    finally:
        torch.set_num_threads(before)


def test_point_sample_on_shared_points_is_bit_identical():
    """The matcher samples all queries at one expanded set of points; point_sample then samples them as
    channels of one map. Values and gradients must equal sampling each map with its own (identical) grid."""
    from workbench.model.points import point_sample

    g = torch.Generator().manual_seed(0)
    for n, h, w, p in [(12, 16, 16, 300), (5, 7, 11, 40), (2, 32, 8, 64)]:
        maps = torch.randn(n, 1, h, w, generator=g, requires_grad=True)
        coords = (torch.rand(1, p, 2, generator=g) * 1.2 - 0.1).expand(n, -1, -1)  # some outside the map
        shared = point_sample(maps, coords)
        grid = (2.0 * coords.contiguous() - 1.0).unsqueeze(2)
        plain = torch.nn.functional.grid_sample(maps, grid, align_corners=False).squeeze(3)
        assert shared.shape == (n, 1, p) and torch.equal(shared, plain)
        g_shared, = torch.autograd.grad(shared.pow(2).sum(), maps)
        g_plain, = torch.autograd.grad(plain.pow(2).sum(), maps)
        assert torch.equal(g_shared, g_plain)


def test_trainer_fused_adamw_equals_the_plain_one(tmp_path, monkeypatch):
    """The trainer's fused AdamW (one kernel over all tensors) ends where torch's default AdamW ends, to float
    rounding, after a few real steps with two learning rates and weight-decay groups."""
    from workbench.config import RunConfig, SolverConfig
    from workbench.engine.trainer import train

    cfg = RunConfig(model=wb.ModelConfig.tiny(num_classes=3, attributes=ATTRIBUTES, loss=wb.LossConfig(num_points=64)),
                    solver=SolverConfig(base_lr=1e-3, batch_size=2, max_iter=4, warmup_iters=2, log_period=1,
                                        checkpoint_period=100), device="cpu")
    data = synthetic_batch(3, {"color": 3, "size": 3}, batch=4, size=64, seed=0)
    built = []
    plain_adamw = torch.optim.AdamW

    def recording_adamw(*args, **kwargs):
        built.append(kwargs.get("fused"))
        return plain_adamw(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", recording_adamw)
    fused = train(cfg, tmp_path / "fused", dataset=data, progress=False).model.state_dict()
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **k: plain_adamw(*a, **{**k, "fused": None}))
    plain = train(cfg, tmp_path / "plain", dataset=data, progress=False).model.state_dict()
    assert built == [True]
    for name, value in plain.items():
        assert torch.allclose(fused[name].double(), value.double(), rtol=1e-5, atol=1e-6), name


def test_solver_compile_compiles_backbone_and_decoder_in_place(tmp_path, monkeypatch):
    """`SolverConfig.compile` compiles the backbone and the decoder in place (nn.Module.compile), so parameter
    names and checkpoints are those of an uncompiled run. (Compiling for real takes minutes on 2 cores; the
    compiled step's speed and losses are measured in bench/RESULTS.md, not here.)"""
    from workbench.config import RunConfig, SolverConfig
    from workbench.engine.trainer import train

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    cfg = RunConfig(model=wb.ModelConfig.tiny(num_classes=3, attributes=ATTRIBUTES, loss=wb.LossConfig(num_points=64)),
                    solver=SolverConfig(base_lr=1e-3, batch_size=2, max_iter=1, warmup_iters=1, compile=True),
                    device="cpu")
    model = train(cfg, tmp_path / "run", dataset=synthetic_batch(3, {"color": 3, "size": 3}, batch=2, size=64),
                  progress=False).model
    assert compiled == [model.backbone, model.decoder]
    assert not [k for k in model.state_dict() if "_orig_mod" in k]
    plain = SolverConfig(base_lr=1e-3, batch_size=2, max_iter=1, warmup_iters=1)
    compiled.clear()
    train(RunConfig(model=cfg.model, solver=plain, device="cpu"), tmp_path / "plain",
          dataset=synthetic_batch(3, {"color": 3, "size": 3}, batch=2, size=64), progress=False)
    assert compiled == []  # off by default


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_encoder_ffn_by_rows_equals_one_pass(monkeypatch, threads):
    """CPU inference runs each deformable encoder layer's FFN (+ residual, norm2) a cache-sized chunk of tokens
    at a time (`DeformableEncoderLayer.ffn_by_rows`): every row must equal the one-pass value to float rounding,
    at `coco_r50`'s widths and at tails of 1, 5 and 63 rows past a whole chunk. Not bit for bit: the BLAS picks
    its kernel and thread split by the number of rows, and that choice differs between CPUs (bit-identical on
    an AMD EPYC with AVX-512, not on an Intel Xeon with AMX); the outputs are LayerNorm'd (unit scale), and the
    worst difference measured across thread counts and instruction sets is ~1e-6. Chunks are a multiple of 64
    rows with a short tail joined to the chunk before it, which keeps rows on the large-M kernels."""
    from workbench.model import pixel_decoder
    from workbench.model.pixel_decoder import DeformableEncoderLayer

    def same(got, want):
        return torch.allclose(got, want, rtol=1e-5, atol=1e-5)

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        layer = DeformableEncoderLayer(256, 1024, 3, 8, 4, dropout=0.0).eval()
        with torch.no_grad():
            for n in (1024 + 1, 1024 + 5, 1024 + 63, 2 * 1344):
                src = torch.randn(1, n, 256) * 2
                want = layer.norm2(src + layer.ffn(src))
                for rows in (64, 512, None):
                    assert same(layer.ffn_by_rows(src, rows), want), (n, rows)
            src = torch.randn(2, 1003, 256)
            monkeypatch.setattr(pixel_decoder, "CPU_FFN_CHUNK_BYTES", 4 * 4 * 1024)  # 4 rows -> 64
            assert same(layer.ffn_by_rows(src), layer.norm2(src + layer.ffn(src)))
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n, step, want", [
    (1024 + 1, 512, [512, 513]), (1024 + 63, 512, [512, 575]), (1024, 512, [512, 512]), (5, 512, [5]),
    (2 * 1344, 64, [64] * 42), (2 * 1344 + 5, 64, [64] * 41 + [69]), (0, 64, []),
])
def test_chunks_have_no_short_tail(n, step, want):
    """The chunk rule itself (bit-identity cannot hold it across CPUs): whole steps, the tail joined to the chunk
    before it, so no chunk but a lone one is shorter than a step."""
    from workbench.model.chunks import chunk_slices

    chunks = chunk_slices(n, step)
    assert [c.stop - c.start for c in chunks] == want
    assert [c.start for c in chunks[1:]] == [c.stop for c in chunks[:-1]] and (not chunks or chunks[-1].stop == n)


def test_encoder_ffn_by_rows_uses_whole_64_row_chunks(monkeypatch):
    """The default chunk is a multiple of 64 rows (the BLAS's large-matrix kernels), at least 64."""
    from workbench.model import pixel_decoder
    from workbench.model.pixel_decoder import DeformableEncoderLayer

    seen = []
    monkeypatch.setattr(pixel_decoder, "chunk_slices", lambda n, step: seen.append(step) or [slice(0, n)])
    layer = DeformableEncoderLayer(32, 64, 1, 4, 2, dropout=0.0).eval()
    for chunk_bytes in (1, 4 * 64 * 64 + 1, 4 * 64 * 64 * 5 + 7):
        monkeypatch.setattr(pixel_decoder, "CPU_FFN_CHUNK_BYTES", chunk_bytes)
        with torch.no_grad():
            layer.ffn_by_rows(torch.randn(1, 300, 32))
    assert seen == [64, 64, 320]


def test_encoder_ffn_by_rows_only_in_cpu_inference(monkeypatch):
    import dataclasses

    from workbench.model import pixel_decoder

    calls = []
    original = pixel_decoder.DeformableEncoderLayer.ffn_by_rows
    monkeypatch.setattr(pixel_decoder.DeformableEncoderLayer, "ffn_by_rows",
                        lambda self, src, rows=None: calls.append(1) or original(self, src, rows))
    torch.manual_seed(0)
    model = wb.build_model(dataclasses.replace(wb.ModelConfig.tiny(3, ATTRIBUTES), enc_layers=2))
    batch = synthetic_batch(3, {k: len(v) for k, v in ATTRIBUTES.items()}, batch=1, size=64, seed=1)
    model.train()
    model(batch, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(batch, generator=torch.Generator().manual_seed(0))
    assert not calls  # training, with or without autograd: one pass, dropout as configured
    model.eval()
    with torch.enable_grad():
        model(batch)
    assert not calls  # autograd on (a saliency map, say): one pass
    model.pixel_decoder.encoder[0].dropout.train()  # Monte Carlo dropout in one layer
    with torch.no_grad():
        model(batch)
    assert len(calls) == 1
    model.eval()
    with torch.no_grad():
        model(batch)
    assert len(calls) == 1 + 2  # both layers


def test_deformable_locations_equal_the_six_dim_broadcast():
    """MSDeformAttn computes its sampling locations as one broadcast over a contiguous (level, point, xy) last
    dim (8-10x faster than a six-dimensional broadcast): its output and every gradient must equal the plain
    formula's, reference point + offset / (W, H) of the level, bit for bit. Non-square levels catch W and H
    swapped."""
    from workbench.ops import MSDeformAttn, ms_deform_attn

    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2)
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.5)
    torch.nn.init.normal_(attn.attention_weights.weight)
    level_shapes = [(6, 10), (3, 5), (2, 3)]
    shapes, starts = torch.tensor(level_shapes), torch.tensor([0, 60, 75])
    query, value, ref = torch.randn(2, 7, 32), torch.randn(2, 81, 32), torch.rand(2, 7, 3, 2)

    def plain(attn):
        v = attn.value_proj(value).view(2, 81, 4, 8)
        offsets = attn.sampling_offsets(query).view(2, 7, 4, 3, 2, 2)
        weights = attn.attention_weights(query).view(2, 7, 4, 6).softmax(-1).view(2, 7, 4, 3, 2)
        normalizer = torch.stack([shapes[:, 1], shapes[:, 0]], -1).float()
        locations = ref[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return attn.output_proj(ms_deform_attn(v.contiguous(), shapes, starts, locations.contiguous(),
                                               weights.contiguous()))

    results = []
    for fn in (lambda: attn(query, ref, value, shapes, starts, level_shapes=level_shapes), lambda: plain(attn)):
        attn.zero_grad()
        out = fn()
        out.square().sum().backward()
        results.append([out.detach()] + [p.grad.clone() for p in attn.parameters()])
    for got, want in zip(*results):
        assert torch.equal(got, want)


def main() -> None:
    if sys.argv[1:] != ["--record"]:
        raise SystemExit(f"usage: python {sys.argv[0]} --record   (writes {REFERENCE})")
    root = Path(__file__).resolve().parents[1]
    if Path(wb.__file__).resolve().parents[1] != root:
        raise SystemExit(f"workbench was imported from {wb.__file__}, not this checkout ({root}): run "
                         f"`PYTHONPATH=. python tests/test_speed_equality.py --record` from {root}")
    torch.set_num_threads(1)
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    torch.save({case: compute(case) for case in sorted(CASES)}, REFERENCE)
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

