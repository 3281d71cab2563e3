"""Dataset tools: COCO-with-attributes format, labelme converter, validator, Dataset and augmentation.

schema.py     the file format, the YAML schema, load / save / format checks
labelme.py    labelme JSON -> COCO-with-attributes (rasterised masks stored as RLE)
validate.py   the validator's report and per category x attribute table
dataset.py    torch Dataset yielding the model's batch format; detectron2-style dicts
transforms.py flip / resize-shortest-edge / large-scale jitter / colour jitter on image + masks together
synthetic.py  circles / squares / triangles with colour and size, written as labelme files
masks.py      polygon / RLE <-> boolean masks;  io.py  JSON reading with positions, atomic writes
problems.py   Problem / DataError: what went wrong, and where;  cli.py  `workbench data ...`
"""
