"""Dataset tools: COCO-with-attributes format, labelme converter, validator, Dataset and augmentation.

schema.py     the file format, the YAML schema, load / save / format checks
categories.py category (thing / stuff) and attribute vocabulary records and their checks
labelme.py    labelme JSON -> COCO-with-attributes (rasterised masks stored as RLE)
labelme_shapes.py  labelme's shapes drawn as labelme draws them
labelme_maps.py    labelme JSON -> COCO panoptic / semantic label PNGs (labelme2voc's painting rule)
coco_panoptic.py   COCO panoptic (+ per-segment attributes): RGB ids, reader, checks
semantic_png.py    semantic label PNGs (255 = ignore) and their class list
segmentation.py    torch Dataset over panoptic / semantic data; targets.py: per-task targets
validate.py   the validator's report and per category x attribute table (COCO and COCO panoptic)
dataset.py    torch Dataset yielding the model's batch format; detectron2-style dicts
transforms.py flip / resize-shortest-edge / large-scale jitter / colour jitter on image + masks together
synthetic.py  circles / squares / triangles with colour and size, written as labelme files
masks.py      polygon / RLE <-> boolean masks;  io.py  JSON reading with positions, atomic writes
problems.py   Problem / DataError: what went wrong, and where;  cli.py  `workbench data ...`
"""
