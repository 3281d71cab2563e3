"""Synthetic shapes: circles / squares / triangles with a colour and a size, written as labelme JSON + PNG.

Made to be learnable by a tiny model in minutes on a CPU: small images, 2-5 objects, three well separated
colours and three size bins whose areas do not overlap, a mild noise background, and occlusion capped so
every object keeps most of itself visible. Objects of the same colour never touch: their shared edge would be
invisible, an unlearnable instance boundary. Written in labelme format so the converter runs on the real
thing: fully visible objects are "circle" / "rectangle" / "polygon" shapes, partly hidden ones a "mask" shape
with their visible pixels, and attributes are spread over all three sources (flags, label, description).
Everything follows from the seed (one `numpy.random.Generator` per image).

Optional (`SynthConfig(patterns=True)`, off by default so the demo and data/sample stay as they are): a
multi-label group `pattern` = any subset of {stripes, dots, outline}, drawn on the object and written as one
flag per value (`pattern=stripes`); an object with no pattern carries no flag, i.e. the group is unlabeled.

Optional (`SynthConfig(stuff=True)`, `workbench data synth --task panoptic|semantic`): two stuff categories
behind the shapes, `sky` above a random horizon and `ground` below it (labelme rectangles, painted first so the
shapes cover them), each with the attribute `tone` (light / dark, a visibly different grey); things leave
`tone` unlabeled. Every pixel is then labelled, so the panoptic and semantic demos have no void. With
`stuff=False` the generator draws exactly the same numbers as before (the instance demo's files are unchanged).
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from workbench.data.io import write_bytes_atomic
from workbench.data.labelme import shape_to_mask
from workbench.data.problems import DataError, Problem
from workbench.data.schema import AttributeVocab, Category, Schema
from workbench.errors import UsageError

__all__ = ["SynthConfig", "SyntheticImage", "make_image", "synthesize", "synthetic_schema", "synthetic_splits"]

CATEGORIES = ("circle", "square", "triangle")
COLORS = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (45, 75, 215)}
# equivalent radius sqrt(area / pi) as a fraction of the image side; bins far apart so size is unambiguous
SIZES = {"small": (0.055, 0.07), "medium": (0.10, 0.12), "large": (0.16, 0.19)}
PATTERNS = ("stripes", "dots", "outline")  # the optional multi-label group
STUFF = ("sky", "ground")  # the optional stuff categories
TONES = {("sky", "light"): 200.0, ("sky", "dark"): 110.0, ("ground", "light"): 160.0, ("ground", "dark"): 60.0}


def synthetic_schema(patterns: bool = False, stuff: bool = False) -> Schema:
    """The schema of the synthetic shapes (data/schema.yaml holds the same, tests check they agree);
    `patterns` adds the multi-label group `pattern`, `stuff` the stuff categories sky / ground and `tone`."""
    attributes = (AttributeVocab("color", tuple(COLORS)), AttributeVocab("size", tuple(SIZES)))
    if patterns:
        attributes += (AttributeVocab("pattern", PATTERNS, kind="multi"),)
    categories = tuple(Category(i + 1, name) for i, name in enumerate(CATEGORIES))
    if stuff:
        categories += tuple(Category(len(CATEGORIES) + i + 1, name, isthing=False) for i, name in enumerate(STUFF))
        attributes += (AttributeVocab("tone", ("light", "dark")),)
    return Schema(categories=categories, attributes=attributes)


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator. `min_visible` caps occlusion: each object keeps at least this share visible."""

    image_size: int = 128
    min_objects: int = 2
    max_objects: int = 5
    min_visible: float = 0.6
    noise_std: float = 10.0
    color_jitter: int = 15  # +- per channel around the base colour
    placement_tries: int = 50
    patterns: bool = False  # add the multi-label group `pattern` (stripes / dots / outline, any subset)
    stuff: bool = False  # add the stuff categories sky / ground (attribute `tone`) behind the shapes

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise UsageError(f"image_size (--size) must be >= 32, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError("need 1 <= min_objects <= max_objects")
        if not 0 < self.min_visible <= 1:
            raise ValueError("min_visible must be in (0, 1]")


@dataclass
class SyntheticImage:
    """One generated image: pixels (H, W, 3) uint8, labelme shapes, and the visible masks (T, H, W) bool."""

    image: np.ndarray
    shapes: list[dict]
    masks: np.ndarray
    categories: list[str]
    colors: list[str]
    sizes: list[str]
    patterns: list[tuple[str, ...]] | None = None  # per object, when SynthConfig.patterns
    stuff: list[tuple[str, str]] | None = None  # (category, tone) per band, when SynthConfig.stuff


def _outline(category: str, cx: float, cy: float, r_eq: float, angle: float) -> list[tuple[float, float]]:
    """Polygon of a square or triangle with the area of a circle of radius `r_eq`, rotated by `angle`."""
    area = math.pi * r_eq**2
    if category == "square":
        circum = math.sqrt(area / 2.0)  # square with circumradius R has area 2 R^2
        n = 4
    else:  # equilateral triangle with circumradius R has area (3 sqrt 3 / 4) R^2
        circum = math.sqrt(area / (3.0 * math.sqrt(3.0) / 4.0))
        n = 3
    return [(cx + circum * math.cos(angle + 2 * math.pi * k / n), cy + circum * math.sin(angle + 2 * math.pi * k / n))
            for k in range(n)]


def _labelme_shape(category: str, cx: float, cy: float, r_eq: float, angle: float, axis_aligned: bool) -> dict:
    """The labelme shape of one object, points rounded as a file stores them (and as the converter reads them)."""
    if category == "circle":
        kind, pts = "circle", [(cx, cy), (cx + r_eq, cy)]
    elif category == "square" and axis_aligned:
        half = math.sqrt(math.pi) * r_eq / 2.0
        kind, pts = "rectangle", [(cx - half, cy - half), (cx + half, cy + half)]
    else:
        kind, pts = "polygon", _outline(category, cx, cy, r_eq, angle)
    return {"label": category, "points": [[round(x, 2), round(y, 2)] for x, y in pts], "group_id": None,
            "description": "", "shape_type": kind, "flags": {}}


def _mask_b64(mask: np.ndarray) -> tuple[list[list[float]], str]:
    """A visible mask as labelme's "mask" shape: inclusive box corners and a base64 PNG of that box."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    buf = io.BytesIO()
    Image.fromarray(mask[y0 : y1 + 1, x0 : x1 + 1].astype(np.uint8) * 255).save(buf, format="PNG")
    return [[float(x0), float(y0)], [float(x1), float(y1)]], base64.b64encode(buf.getvalue()).decode("ascii")


def make_image(rng: np.random.Generator, cfg: SynthConfig = SynthConfig()) -> SyntheticImage:
    """Draw one image. Objects are painted in order (later ones on top); a placement that would leave any
    object with less than `cfg.min_visible` of itself visible is retried elsewhere, then a different object
    is drawn instead."""
    s = cfg.image_size
    base = rng.uniform(100, 160)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    gradient = rng.uniform(-20, 20) * (xx - 0.5) + rng.uniform(-20, 20) * (yy - 0.5)
    background = base + gradient[..., None] + rng.normal(0, cfg.noise_std, (s, s, 3))
    bands = _stuff_bands(rng, background, base, s) if cfg.stuff else []

    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    full_masks: list[np.ndarray] = []
    objects = []  # (category, color, size, labelme shape, full mask)
    for _ in range(3 * n):  # a new object (colour, size, ...) whenever one finds no place
        if len(objects) == n:
            break
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        size = list(SIZES)[int(rng.integers(len(SIZES)))]
        lo, hi = SIZES[size]
        r_eq = rng.uniform(lo, hi) * s
        angle = rng.uniform(0, 2 * math.pi)
        axis_aligned = bool(rng.random() < 0.5)
        for _try in range(cfg.placement_tries):
            margin = r_eq * 1.6 + 1  # the triangle reaches furthest: circumradius 1.56 r_eq
            cx, cy = rng.uniform(margin, s - margin, size=2)
            shape = _labelme_shape(category, cx, cy, r_eq, angle, axis_aligned)
            mask = shape_to_mask(shape, s, s)  # the converter's own rasteriser: ground truth == converted
            same_colour = [m for m, o in zip(full_masks, objects) if o[1] == color]
            touches_twin = any((ndimage.binary_dilation(m, iterations=2) & mask).any() for m in same_colour)
            if not touches_twin and _occlusion_ok(full_masks + [mask], cfg.min_visible):
                full_masks.append(mask)
                objects.append((category, color, size, shape, mask))
                break

    image = background
    patterns: list[tuple[str, ...]] = []
    for category, color, size, shape, mask in objects:
        rgb = np.array(COLORS[color], dtype=np.float64) + rng.integers(-cfg.color_jitter, cfg.color_jitter + 1, 3)
        shade = rgb + rng.normal(0, cfg.noise_std * 0.5, (int(mask.sum()), 3))
        image[mask] = shade
        if cfg.patterns:
            chosen = tuple(p for p in PATTERNS if rng.random() < 0.5)
            _draw_patterns(image, mask, chosen, yy, xx, s)
            patterns.append(chosen)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    visible = _visible(full_masks)
    shapes = []
    for (category, color, size, shape, full), vis in zip(objects, visible):
        tags = f"color={color} size={size}"
        source = ("flags", "label", "description")[int(rng.integers(3))]  # exercise every attribute source
        if source == "flags":
            shape["flags"] = {color: True, f"size={size}": True}
        elif source == "label":
            shape["label"] = f"{category} {tags}"
        else:
            shape["description"] = tags
        if cfg.patterns:  # several flags of one multi-label group on one shape
            shape["flags"] = {**shape["flags"], **{f"pattern={p}": True for p in patterns[len(shapes)]}}
        if not np.array_equal(vis, full):  # partly hidden: store exactly what is visible
            shape["shape_type"] = "mask"
            shape["points"], shape["mask"] = _mask_b64(vis)
        shapes.append(shape)
    return SyntheticImage(
        image=image,
        shapes=[shape for shape, _ in bands] + shapes,  # painted first: the shapes cover them
        masks=np.stack(visible) if visible else np.zeros((0, s, s), bool),
        categories=[o[0] for o in objects],
        colors=[o[1] for o in objects],
        sizes=[o[2] for o in objects],
        patterns=patterns if cfg.patterns else None,
        stuff=[band for _, band in bands] if cfg.stuff else None,
    )


def _stuff_bands(rng: np.random.Generator, background: np.ndarray, base: float, s: int) -> list[tuple[dict, tuple]]:
    """Sky above a random horizon, ground below, each a tone of grey (in place on `background`), as labelme
    rectangles -> [(shape, (category, tone))]. The pixels are the converter's rasterisation of the rectangles."""
    horizon = int(rng.integers(int(0.35 * s), int(0.65 * s) + 1))
    out = []
    for name, (y0, y1) in zip(STUFF, ((0, horizon - 1), (horizon, s - 1))):
        tone = ("light", "dark")[int(rng.integers(2))]
        shape = {"label": f"{name} tone={tone}", "points": [[0.0, float(y0)], [float(s - 1), float(y1)]],
                 "group_id": None, "description": "", "shape_type": "rectangle", "flags": {}}
        background[shape_to_mask(shape, s, s)] += TONES[(name, tone)] - base
        out.append((shape, (name, tone)))
    return out


def _draw_patterns(image: np.ndarray, mask: np.ndarray, chosen: tuple[str, ...], yy: np.ndarray, xx: np.ndarray,
                   s: int) -> None:
    """Stripes darken every 4th row pair, dots brighten a 6-pixel grid, outline darkens a 2-pixel border."""
    rows, cols = np.rint(yy * s).astype(int), np.rint(xx * s).astype(int)
    if "stripes" in chosen:
        image[mask & (rows % 4 < 2)] *= 0.5
    if "dots" in chosen:
        image[mask & (rows % 6 == 3) & (cols % 6 == 3)] = 250.0
    if "outline" in chosen:
        image[mask & ~ndimage.binary_erosion(mask, iterations=2)] = 15.0


def _visible(full_masks: list[np.ndarray]) -> list[np.ndarray]:
    covered = np.zeros_like(full_masks[0]) if full_masks else None
    out = []
    for m in reversed(full_masks):  # later objects are on top
        out.append(m & ~covered)
        covered = covered | m
    return out[::-1]


def _occlusion_ok(full_masks: list[np.ndarray], min_visible: float) -> bool:
    return all(v.sum() >= min_visible * m.sum() for v, m in zip(_visible(full_masks), full_masks))


def labelme_document(sample: SyntheticImage, image_name: str) -> dict:
    h, w = sample.image.shape[:2]
    return {"version": "5.4.1", "flags": {}, "shapes": sample.shapes, "imagePath": image_name,
            "imageData": None, "imageHeight": h, "imageWidth": w}


MANIFEST = ".synth.sha256"  # sha256sum format; no .json suffix, so the converter does not read it as labelme


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _read_manifest(out: Path) -> dict[str, str]:
    """name -> sha256 of the files an earlier `synthesize` wrote into `out` (empty when there is none)."""
    try:
        lines = (out / MANIFEST).read_text().splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return {}
    return dict(reversed(line.split("  ", 1)) for line in lines if "  " in line)


def _sample_files(i: int, seed: int, cfg: SynthConfig) -> dict[str, bytes]:
    """Image i's `shapes_<i>.png` and `.json` bytes; they depend only on (seed, i, cfg)."""
    stem = f"shapes_{i:05d}"
    sample = make_image(np.random.default_rng([seed, i]), cfg)
    buf = io.BytesIO()
    Image.fromarray(sample.image).save(buf, format="PNG")
    doc = labelme_document(sample, f"{stem}.png")
    return {f"{stem}.png": buf.getvalue(), f"{stem}.json": json.dumps(doc, indent=2).encode("utf-8")}


def synthesize(out_dir: str | os.PathLike, num_images: int, seed: int = 0, cfg: SynthConfig = SynthConfig(),
               progress: bool = True, overwrite: bool = False) -> list[Path]:
    """Write `num_images` PNG + labelme JSON pairs (`shapes_00000.png/json`, ...) and `schema.yaml` to
    `out_dir`; each file is written atomically. Image i depends only on (seed, i). Returns the JSON paths.

    A file of that name already in `out_dir` is replaced only when it is what this call writes, or what an
    earlier call wrote and nobody edited since (its sha256 in `.synth.sha256`), or with `overwrite`; else
    `DataError` before anything is written: an edited label or a user's file is never replaced in silence."""
    if num_images < 1:
        raise UsageError(f"num_images (--images) must be >= 1, got {num_images}")
    out = Path(out_dir)
    stems = [f"shapes_{i:05d}" for i in range(num_images)]
    stale = sorted(set(p.stem for p in out.glob("shapes_*.json")) - set(stems)) if out.is_dir() else []
    if stale:  # the converter reads every JSON in the folder: leftovers of a bigger run would join the dataset
        raise DataError([Problem("stale_output", str(out), f"{len(stale)} file(s) from an earlier, bigger run "
                                 f"(e.g. {stale[0]}.json); remove them or use an empty folder")])
    schema_bytes = synthetic_schema(cfg.patterns, cfg.stuff).to_yaml().encode("utf-8")
    if out.is_dir() and not overwrite:
        recorded = _read_manifest(out)

        def unrecorded(names: list[str]) -> list[str]:  # existing files whose bytes the manifest does not hold
            return [n for n in names if (out / n).exists()
                    and (not (out / n).is_file() or recorded.get(n) != _sha256((out / n).read_bytes()))]

        changed = [n for n in unrecorded(["schema.yaml"]) if (out / n).read_bytes() != schema_bytes]
        for i, stem in enumerate(stems):
            names = unrecorded([f"{stem}.png", f"{stem}.json"])
            if names:  # not recorded: still fine if it is exactly what this call writes
                now = _sample_files(i, seed, cfg)
                changed += [n for n in names if not (out / n).is_file() or (out / n).read_bytes() != now[n]]
            if len(changed) >= 3:
                break
        if changed:
            raise DataError([Problem("would_overwrite", str(out), f"holds {', '.join(changed[:3])}, not written by "
                                     "an earlier `data synth` or edited since; use an empty folder or pass "
                                     "--overwrite (overwrite=True) to replace them")])
    out.mkdir(parents=True, exist_ok=True)
    written = {"schema.yaml": _sha256(schema_bytes)}
    write_bytes_atomic(out / "schema.yaml", schema_bytes)
    paths = []
    for i in tqdm(range(num_images), desc="synth", unit="image", disable=not progress):
        for name, data in _sample_files(i, seed, cfg).items():
            write_bytes_atomic(out / name, data)
            written[name] = _sha256(data)
        paths.append(out / f"{stems[i]}.json")
    write_bytes_atomic(out / MANIFEST, "".join(f"{h}  {n}\n" for n, h in written.items()).encode("utf-8"))
    return paths


def synthetic_splits(data_dir: str | os.PathLike, train_images: int, val_images: int, image_size: int = 128,
                     progress: bool = True, patterns: bool = False, task: str = "instance") -> tuple[Path, Path]:
    """The shapes recipe end to end, as a user would run it, for a train and a held-out split (seeds 1 and 2)
    under `data_dir`/{train,val}; images are in those folders. Per task (data/task_data.py), what is written,
    validated and returned: instance: labelme -> COCO-with-attributes -> the two coco.json paths; panoptic (with
    stuff): labelme -> `panoptic/panoptic.json` + PNGs -> the two JSON paths; semantic (with stuff): labelme ->
    `semantic/labels/*.png` + `semantic/classes.yaml` -> the two `semantic` folders.
    Raises if validation finds an error."""
    from workbench.data.task_data import convert_for_task, validate_source

    if task not in ("instance", "panoptic", "semantic"):
        raise UsageError(f"task must be instance, panoptic or semantic, got {task!r}")
    stuff = task != "instance"
    schema = synthetic_schema(patterns, stuff)
    paths = []
    for split, n, seed in (("train", train_images, 1), ("val", val_images, 2)):
        folder = Path(data_dir) / split
        synthesize(folder, n, seed=seed, cfg=SynthConfig(image_size=image_size, patterns=patterns, stuff=stuff),
                   progress=progress)
        data = convert_for_task(folder, schema, folder, task, progress=progress)
        report = validate_source(data.source, schema, data.image_root, progress=progress)
        if not report.ok:
            raise RuntimeError(f"validation of {data.source} failed:\n{report}")
        paths.append(data.source)
    return paths[0], paths[1]
