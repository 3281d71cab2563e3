"""COCO's category names in the order of upstream Mask2Former's class heads (detectron2's `COCO_CATEGORIES`, by
id): row i of a published COCO instance model's class head is `COCO_INSTANCE_CLASSES[i]` (row 80 is "no
object"), of a COCO panoptic model's `COCO_PANOPTIC_CLASSES[i]` (row 133): the 80 things, then the 53 stuff
classes. Used to carry class-head rows over by name and to tell which rows are stuff."""
from __future__ import annotations

COCO_INSTANCE_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
assert len(COCO_INSTANCE_CLASSES) == 80

COCO_STUFF_CLASSES: tuple[str, ...] = (
    "banner", "blanket", "bridge", "cardboard", "counter", "curtain", "door-stuff", "floor-wood", "flower",
    "fruit", "gravel", "house", "light", "mirror-stuff", "net", "pillow", "platform", "playingfield", "railroad",
    "river", "road", "roof", "sand", "sea", "shelf", "snow", "stairs", "tent", "towel", "wall-brick", "wall-stone",
    "wall-tile", "wall-wood", "water-other", "window-blind", "window-other", "tree-merged", "fence-merged",
    "ceiling-merged", "sky-other-merged", "cabinet-merged", "table-merged", "floor-other-merged",
    "pavement-merged", "mountain-merged", "grass-merged", "dirt-merged", "paper-merged", "food-other-merged",
    "building-other-merged", "rock-merged", "wall-other-merged", "rug-merged",
)
assert len(COCO_STUFF_CLASSES) == 53

COCO_PANOPTIC_CLASSES: tuple[str, ...] = COCO_INSTANCE_CLASSES + COCO_STUFF_CLASSES
COCO_PANOPTIC_STUFF: tuple[int, ...] = tuple(range(80, 133))
