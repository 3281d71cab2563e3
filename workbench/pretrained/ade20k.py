"""ADE20K's 150 semantic classes in the order of upstream Mask2Former's ADE20K class heads (detectron2's
`ADE20K_SEM_SEG_CATEGORIES`; row 150 is "no object"). Every class is stuff for semantic segmentation. The names
are the dataset's synonym lists; `ade20k_short_name` gives the first synonym, which transformers' `id2label`
uses, so rows carry over by either spelling."""
from __future__ import annotations

ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road, route", "bed", "window", "grass", "cabinet",
    "sidewalk, pavement", "person", "earth, ground", "door", "table", "mountain, mount", "plant", "curtain", "chair",
    "car", "water", "painting, picture", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair",
    "seat", "fence", "desk", "rock, stone", "wardrobe, closet, press", "lamp", "tub", "rail", "cushion",
    "base, pedestal, stand", "box", "column, pillar", "signboard, sign", "chest of drawers, chest, bureau, dresser",
    "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator, icebox", "grandstand, covered stand",
    "path", "stairs", "runway", "case, display case, showcase, vitrine", "pool table, billiard table, snooker table",
    "pillow", "screen door, screen", "stairway, staircase", "river", "bridge, span", "bookcase", "blind, screen",
    "coffee table", "toilet, can, commode, crapper, pot, potty, stool, throne", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm, palm tree", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel, hut, hutch, shack, shanty", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning, sunshade, sunblind", "street lamp", "booth", "tv", "plane", "dirt track", "clothes", "pole",
    "land, ground, soil", "bannister, banister, balustrade, balusters, handrail",
    "escalator, moving staircase, moving stairway", "ottoman, pouf, pouffe, puff, hassock", "bottle",
    "buffet, counter, sideboard", "poster, posting, placard, notice, bill, card", "stage", "van", "ship", "fountain",
    "conveyer belt, conveyor belt, conveyer, conveyor, transporter", "canopy",
    "washer, automatic washer, washing machine", "plaything, toy", "pool", "stool", "barrel, cask",
    "basket, handbasket", "falls", "tent", "bag", "minibike, motorbike", "cradle", "oven", "ball", "food, solid food",
    "step, stair", "tank, storage tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket, cover", "sculpture", "hood, exhaust hood", "sconce", "vase", "traffic light", "tray",
    "trash can", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass, drinking glass", "clock", "flag",
)
assert len(ADE20K_CLASSES) == 150


def ade20k_short_name(name: str) -> str:
    """'road, route' -> 'road': the first synonym."""
    return name.split(",")[0].strip()
