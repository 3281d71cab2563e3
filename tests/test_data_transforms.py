"""Augmentations move image and masks together: checked by drawing shapes, augmenting, and re-deriving them."""
import numpy as np
import pytest

from workbench.config import AugmentConfig
from workbench.data.synthetic import COLORS, SynthConfig, make_image
from workbench.data.transforms import CropPad, HFlip, Resize, build_augmentation

CLEAN = SynthConfig(noise_std=0.0, color_jitter=0)  # flat colours, so pixels can be traced back to objects


def colour_of(pixels: np.ndarray) -> str:
    """The synthetic colour name nearest to the mean of (N, 3) pixels."""
    mean = pixels.reshape(-1, 3).mean(axis=0)
    return min(COLORS, key=lambda name: np.linalg.norm(mean - np.array(COLORS[name])))


def rederive(image: np.ndarray, colour: str) -> np.ndarray:
    """(H, W) bool: pixels whose colour is within reach of `colour`."""
    return np.linalg.norm(image.astype(float) - np.array(COLORS[colour]), axis=-1) < 60


@pytest.mark.parametrize("recipe", ["lsj", "shortest_edge"])
@pytest.mark.parametrize("seed", range(6))
def test_masks_stay_on_their_objects_after_augmentation(recipe, seed):
    sample = make_image(np.random.default_rng(seed), CLEAN)
    cfg = AugmentConfig(recipe=recipe, image_size=96, min_scale=0.3, max_scale=2.0, shortest_edge=(64, 160),
                        max_size=200)
    image, masks = build_augmentation(cfg, train=True)(sample.image, sample.masks, np.random.default_rng(seed))
    assert image.dtype == np.uint8 and masks.dtype == bool and masks.shape[1:] == image.shape[:2]
    assert masks.shape[0] == len(sample.colors)
    assert not (masks.sum(axis=0) > 1).any()  # visible masks stay disjoint
    for colour in COLORS:
        union = np.zeros(image.shape[:2], bool)
        for m, c in zip(masks, sample.colors):
            if c == colour:
                union |= m
        drawn = rederive(image, colour)
        if union.sum() < 20:  # cropped away (or nearly): nothing to compare
            continue
        iou = (union & drawn).sum() / (union | drawn).sum()
        assert iou > 0.85, f"{colour}: masks and pixels disagree (IoU {iou:.2f})"
    for m, c in zip(masks, sample.colors):
        if m.sum() >= 20:
            assert colour_of(image[m]) == c


def test_flip_moves_image_and_masks_the_same_way():
    image = np.zeros((4, 5, 3), np.uint8)
    image[2, 1] = 255
    masks = np.zeros((1, 4, 5), bool)
    masks[0, 2, 1] = True
    t = HFlip()
    assert t.apply_image(image)[2, 3].tolist() == [255, 255, 255]
    assert np.argwhere(t.apply_masks(masks)).tolist() == [[0, 2, 3]]


def test_resize_keeps_blocks_aligned():
    image = np.zeros((10, 10, 3), np.uint8)
    image[2:6, 4:8] = 200
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 2:6, 4:8] = True
    t = Resize(20, 30)
    big, big_masks = t.apply_image(image), t.apply_masks(masks)
    assert big.shape == (20, 30, 3) and big_masks.shape == (1, 20, 30)
    assert np.argwhere(big_masks[0]).min(0).tolist() == [4, 12] and np.argwhere(big_masks[0]).max(0).tolist() == [11, 23]
    # bilinear blurs the edge by half a pixel either side; the mask must sit exactly in the middle of it
    weights = big[..., 0].astype(float)
    ys, xs = np.mgrid[0:20, 0:30]
    image_centre = [(ys * weights).sum() / weights.sum(), (xs * weights).sum() / weights.sum()]
    assert np.allclose(image_centre, np.argwhere(big_masks[0]).mean(0), atol=1e-6)
    assert (big[big_masks[0]] >= 100).all() and (big[~big_masks[0]] <= 100).all()


def test_crop_pads_bottom_right_and_keeps_offsets():
    image = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    masks = np.zeros((2, 5, 6), bool)
    masks[0, 4, 5] = True  # inside the window
    masks[1, 0, 0] = True  # outside it
    t = CropPad(y0=2, x0=3, height=4, width=4, pad_value=7)
    out, out_masks = t.apply_image(image), t.apply_masks(masks)
    assert np.array_equal(out[:3, :3], image[2:5, 3:6])
    assert (out[3:] == 7).all() and (out[:, 3:] == 7).all()
    assert np.argwhere(out_masks[0]).tolist() == [[2, 2]] and not out_masks[1].any()


def test_deterministic_under_a_seed_and_varies_with_it():
    sample = make_image(np.random.default_rng(0))
    aug = build_augmentation(AugmentConfig.synthetic(min_scale=0.5, max_scale=1.5), train=True)
    a = aug(sample.image, sample.masks, np.random.default_rng(5))
    b = aug(sample.image, sample.masks, np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    others = [aug(sample.image, sample.masks, np.random.default_rng(s))[0] for s in range(6, 10)]
    assert any(o.shape != a[0].shape or not np.array_equal(o, a[0]) for o in others)


def test_colour_jitter_is_off_by_default_and_changes_colours_when_on():
    sample = make_image(np.random.default_rng(1))
    geometric_only = dict(min_scale=1.0, max_scale=1.0)  # 128 -> 128: output is the image or its mirror
    off = build_augmentation(AugmentConfig.synthetic(**geometric_only), train=True)
    for s in range(4):
        out, _ = off(sample.image, sample.masks, np.random.default_rng(s))
        assert np.array_equal(out, sample.image) or np.array_equal(out, sample.image[:, ::-1])
    on = build_augmentation(AugmentConfig.synthetic(**geometric_only, color_jitter=True), train=True)
    jittered = [on(sample.image, sample.masks, np.random.default_rng(s))[0] for s in range(4)]
    assert all(not np.array_equal(j, sample.image) and not np.array_equal(j, sample.image[:, ::-1]) for j in jittered)


def test_test_time_resizes_shortest_edge_or_keeps_size():
    image = np.zeros((60, 90, 3), np.uint8)
    masks = np.zeros((0, 60, 90), bool)
    out, out_masks = build_augmentation(AugmentConfig(test_shortest_edge=120), train=False)(image, masks, None)
    assert out.shape == (120, 180, 3) and out_masks.shape == (0, 120, 180)
    out, _ = build_augmentation(AugmentConfig.synthetic(), train=False)(image, masks, None)
    assert out.shape == image.shape


def test_lsj_output_is_a_fixed_square():
    sample = make_image(np.random.default_rng(2))
    aug = build_augmentation(AugmentConfig(image_size=96), train=True)
    shapes = {aug(sample.image, sample.masks, np.random.default_rng(s))[0].shape for s in range(5)}
    assert shapes == {(96, 96, 3)}


def test_config_rejects_unknown_recipe():
    with pytest.raises(ValueError, match="recipe"):
        AugmentConfig(recipe="mosaic")
