"""`workbench data synth | convert | validate`: the dataset tools from the command line."""
from __future__ import annotations

from workbench.errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="dataset tools: synthetic shapes, labelme -> COCO, validation")
    data_sub = p.add_subparsers(dest="data_command", required=True)

    s = data_sub.add_parser("synth", help="write synthetic shapes as labelme JSON + PNG (and schema.yaml)")
    s.add_argument("out", help="output folder (e.g. data/generated/shapes)")
    s.add_argument("--images", type=int, default=200, help="number of images")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=128, help="image side in pixels")
    s.add_argument("--patterns", action="store_true",
                   help="add the multi-label group `pattern` (stripes / dots / outline, any subset)")
    s.add_argument("--task", choices=("instance", "panoptic", "semantic"), default="instance",
                   help="panoptic / semantic: add the stuff categories sky and ground (attribute tone) behind the "
                        "shapes; convert with `workbench data convert ... --task panoptic|semantic`")
    s.add_argument("--overwrite", action="store_true",
                   help="replace files in OUT that an earlier synth did not write or that were edited since")
    s.set_defaults(func=run_synth)

    c = data_sub.add_parser("convert", help="labelme folder -> COCO-with-attributes JSON, COCO panoptic or semantic "
                                            "PNGs (written atomically)")
    c.add_argument("labelme_dir", help="folder with labelme *.json (searched recursively) and their images")
    c.add_argument("--schema", help="YAML schema: categories, attributes, attribute_sources, ignore_labels")
    c.add_argument("--labels", help="labelme's labels.txt as the category list (__ignore__ = ignore regions, "
                                    "_background_ skipped); with --schema its categories must agree")
    c.add_argument("--out", required=True, help="output COCO JSON (instance) or folder (panoptic: panoptic.json + "
                                                "panoptic/*.png; semantic: labels/*.png + classes.yaml); image "
                                                "file_names are relative to the JSON's folder")
    c.add_argument("--task", choices=("instance", "panoptic", "semantic"), default="instance",
                   help="instance: COCO-with-attributes (default); panoptic: COCO panoptic with attributes "
                        "(stuff = the schema's isthing: false categories); semantic: class-index PNGs, 255 = ignore")
    c.set_defaults(func=run_convert)

    f = data_sub.add_parser("import-fashionpedia", help="Fashionpedia JSON -> COCO-with-attributes (written atomically)")
    f.add_argument("src", help="Fashionpedia annotation file (attributes + per-annotation attribute_ids)")
    f.add_argument("--out", required=True, help="output COCO-with-attributes JSON")
    f.add_argument("--all-multi", action="store_true",
                   help="make every attribute group multi-label (default: only groups where some annotation "
                        "holds several values)")
    f.set_defaults(func=run_import_fashionpedia)

    v = data_sub.add_parser("validate", help="check a COCO-with-attributes or COCO panoptic file; exit 1 on errors")
    v.add_argument("coco", help="COCO-with-attributes JSON, or COCO panoptic JSON (its PNGs are checked too)")
    v.add_argument("--images", help="image folder the file_names are relative to (checks the files too)")
    v.add_argument("--schema", help="YAML schema the file must agree with")
    v.add_argument("--pngs", help="COCO panoptic: the PNG folder (default: beside the JSON, named as its stem)")
    v.set_defaults(func=run_validate)


def run_synth(args) -> int:
    from workbench.data.synthetic import SynthConfig, synthesize

    # A DataError goes to workbench.cli, which prints it (its traceback with --debug) and exits 1.
    paths = synthesize(args.out, args.images, seed=args.seed, cfg=SynthConfig(
        image_size=args.size, patterns=args.patterns, stuff=args.task != "instance"), overwrite=args.overwrite)
    print(f"wrote {len(paths)} labelme files + images and schema.yaml to {args.out}")
    return 0


def run_convert(args) -> int:
    from workbench.data.labelme import convert_labelme
    from workbench.data.problems import DataError
    from workbench.data.schema import load_labels_txt, load_schema

    if not (args.schema or args.labels):
        raise UsageError("workbench data convert: give --schema SCHEMA.yaml or --labels labels.txt (or both)")
    try:
        schema = load_schema(args.schema) if args.schema else None
        if args.labels:
            schema = load_labels_txt(args.labels, schema)
        if args.task != "instance":
            return _convert_maps(args, schema)
        coco = convert_labelme(args.labelme_dir, schema, out=args.out)
    except DataError as e:
        e.add_note("nothing written.")
        raise
    crowd = sum(1 for a in coco["annotations"] if a["iscrowd"])
    empty = len(coco["images"]) - len({a["image_id"] for a in coco["annotations"] if not a["iscrowd"]})
    print(f"wrote {args.out}: {len(coco['images'])} images ({empty} without instances), "
          f"{len(coco['annotations']) - crowd} instances, {crowd} ignore-region annotations")
    return 0


def _convert_maps(args, schema) -> int:
    from pathlib import Path

    from workbench.data.labelme_maps import convert_labelme_panoptic, convert_labelme_semantic

    if Path(args.out).suffix.lower() == ".json":
        raise UsageError(f"--out {args.out}: --task {args.task} writes a folder (e.g. --out DIR/{args.task})")
    if args.task == "panoptic":
        data = convert_labelme_panoptic(args.labelme_dir, schema, out=args.out)
        segments = [s for a in data["annotations"] for s in a["segments_info"]]
        stuff = {c["id"] for c in data["categories"] if not c["isthing"]}
        n_stuff = sum(1 for s in segments if s["category_id"] in stuff)
        print(f"wrote {args.out}: panoptic.json + panoptic/ ({len(data['images'])} PNGs), "
              f"{len(segments) - n_stuff} thing and {n_stuff} stuff segments")
    else:
        maps = convert_labelme_semantic(args.labelme_dir, schema, out=args.out)
        print(f"wrote {args.out}: labels/ ({len(maps)} PNGs, 255 = ignore) + classes.yaml ({schema.num_classes} classes)")
    return 0


def run_import_fashionpedia(args) -> int:
    from workbench.data.fashionpedia import import_fashionpedia
    from workbench.data.problems import DataError

    try:
        coco = import_fashionpedia(args.src, args.out, all_multi=args.all_multi)
    except DataError as e:
        e.add_note("nothing written.")
        raise
    kinds = ", ".join(f"{a['name']} ({a.get('kind', 'single')}, {len(a['values'])})" for a in coco["attributes"])
    print(f"wrote {args.out}: {len(coco['images'])} images, {len(coco['annotations'])} instances; groups: {kinds}")
    return 0


def run_validate(args) -> int:
    from workbench.data.io import read_json
    from workbench.data.problems import DataError
    from workbench.data.schema import load_schema
    from workbench.data.validate import is_coco_panoptic, validate_coco, validate_coco_panoptic

    schema = load_schema(args.schema) if args.schema else None  # a DataError: workbench.cli prints it, exit 1
    try:
        panoptic = is_coco_panoptic(read_json(args.coco))
    except DataError:
        panoptic = False  # validate_coco reports it
    if panoptic:
        report = validate_coco_panoptic(args.coco, args.pngs, images=args.images, schema=schema)
    else:
        report = validate_coco(args.coco, images=args.images, schema=schema)
    print(report)
    return 0 if report.ok else 1
