"""`workbench train | eval | predict`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from workbench.device import device_arg
from workbench.errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the main job: synthesise, convert, validate, train, evaluate, draw")
    p.add_argument("--out", default=None, help="run folder (default runs/demo, runs/demo_<task> for the others)")
    p.add_argument("--data-dir", default=None, help="data folder (default data/generated/demo[_<task>])")
    p.add_argument("--task", default="instance", choices=["instance", "panoptic", "semantic"],
                   help="instance (the default demo), or panoptic / semantic on the shapes with stuff bands")
    p.add_argument("--device", default=None, type=device_arg, help="cpu | cuda | cuda:N (default: GPU when present)")
    p.add_argument("--max-iter", type=int, default=None, help="training steps (default: the demo's)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0); the data are the same for every "
                   "seed, so seeds compare the recipe, not the data")
    p.set_defaults(func=run_demo)

    p = sub.add_parser("train", help="train a model from a YAML config into a run directory")
    p.add_argument("--config", required=True, help="YAML mapping onto RunConfig (model/solver/data/augment/eval)")
    p.add_argument("--out", required=True, help="run directory (config.yaml, metrics.jsonl, checkpoints)")
    p.add_argument("--device", default=None, type=device_arg, help="cpu | cuda | cuda:N (default: the config's, "
                   "else auto)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt (or the newest readable "
                   "older checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="start again in an existing run directory (its run "
                   "files are deleted); without it or --resume an existing run is refused")
    p.add_argument("--no-eval", action="store_true", help="skip evaluation on data.val after training")
    p.add_argument("--weights", default=None, help="Mask2Former checkpoint to start from (overrides model.weights): "
                   "upstream .pkl/.pth, transformers folder or .safetensors")
    p.set_defaults(func=run_train)

    p = sub.add_parser("export-weights", help="write a trained run as a transformers Mask2Former folder")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--format", choices=["transformers"], required=True)
    p.add_argument("out", metavar="OUT_DIR", help="new folder: config.json, model.safetensors "
                   "(+ attribute_heads.safetensors: transformers' model has no attribute heads)")
    p.set_defaults(func=run_export_weights)

    p = sub.add_parser("eval", help="evaluate a run: segm AP, joint AP, per-attribute accuracy")
    p.add_argument("--run", default=None, help="run directory (required unless --fashionpedia-results)")
    p.add_argument("--fashionpedia-results", default=None, metavar="FILE",
                   help="score a results file in Fashionpedia's format with AP(IoU+F1) against --data "
                        "(Fashionpedia or COCO-with-attributes GT); no model is run")
    p.add_argument("--data", default=None, help="COCO-with-attributes file (default: the run's data.val); its "
                   "metrics go to RUN/metrics_<name>.json, never over the run's metrics.json")
    p.add_argument("--images", default=None, help="image folder for --data (default: the file's folder)")
    p.add_argument("--device", default=None, type=device_arg)
    p.add_argument("--scoring", choices=["main", "product", "mean"], default=None)
    p.add_argument("--dedupe-iou", type=float, default=None)
    p.add_argument("--json", action="store_true", help="print metrics as JSON instead of a table")
    p.add_argument("--checkpoint", choices=["last", "best"], default="last", help="the run's final weights (default) "
                   "or best.pt (kept by solver.eval_period)")
    p.set_defaults(func=run_eval)

    p = sub.add_parser("predict", help="draw each instance's mask, category and attributes on images")
    p.add_argument("--run", required=True)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", required=True, help="output folder for PNG overlays")
    p.add_argument("--device", default=None, type=device_arg)
    p.add_argument("--checkpoint", choices=["last", "best"], default="last", help="the run's final weights (default) "
                   "or best.pt (kept by solver.eval_period)")
    p.set_defaults(func=run_predict)


def run_demo(args) -> int:
    from workbench.engine.demo import DEMO_MAX_ITER, demo_dirs, run_demo as demo

    run_dir, data_dir = demo_dirs(args.task)
    return demo(args.out or run_dir, args.data_dir or data_dir, device=args.device,
                max_iter=DEMO_MAX_ITER if args.max_iter is None else args.max_iter, task=args.task, seed=args.seed)


def load_train_config(path: str, weights: str | None = None, resume_dir: str | None = None):
    """YAML -> RunConfig; num_classes/attributes default to the training data's schema. With `model.weights`
    (or `weights`, which overrides it) the architecture fields the YAML leaves out come from the checkpoint
    (wb.pretrained_config): YAML > checkpoint > preset. With `resume_dir` (--resume) they come from that run's
    config.yaml instead, which recorded them when the run started: resuming never reads the weights (the run
    continues from its own checkpoint), so they need not be where they were."""
    from workbench.config_file import ConfigError, read_yaml, require_mapping, run_config_from_dict
    from workbench.data.segmentation import source_schema

    doc = read_yaml(path)
    if not doc:
        raise ConfigError(f"{path}: the config is empty; it needs at least `data: {{train: COCO.json}}` (the model's "
                          "classes and attributes default to that file's); see data/train_shapes.yaml")
    defaults = {}
    for section in ("data", "model"):  # read below, before run_config_from_dict checks the rest
        if doc.get(section) is not None:
            require_mapping(doc[section], f"{path}: {section}")
    train_json = (doc.get("data") or {}).get("train")
    model = dict(doc.get("model") or {})
    if weights is not None:
        model["weights"] = weights
    started = _resumed_model(resume_dir) if model.get("weights") else None
    if started is not None:
        from workbench.pretrained.load import CHECKPOINT_FIELDS

        if model.get("weights") and str(Path(model["weights"]).resolve()) != started.get("weights"):
            print(f"[workbench] --resume: model.weights {model['weights']} is not read (the run continues from its "
                  f"checkpoint); the run keeps its record: {started.get('weights')}", file=sys.stderr, flush=True)
        model["weights"] = started.get("weights", model["weights"])
        defaults.update({k: started[k] for k in CHECKPOINT_FIELDS if k in started})
    elif model.get("weights"):
        from workbench.pretrained.load import checkpoint_fields
        from workbench.pretrained.source import read_checkpoint

        model["weights"] = str(Path(model["weights"]).resolve())
        defaults.update(checkpoint_fields(read_checkpoint(model["weights"])))
    doc = {**doc, "model": model}
    if train_json and not {"num_classes", "attributes", "stuff_classes"} <= set(model):
        defaults.update(source_schema(train_json).model_fields())
    return run_config_from_dict(doc, model_defaults=defaults)


def _resumed_model(run_dir: str | None) -> dict | None:
    """The model section of the run being resumed (RUN/config.yaml), or None when there is none to resume."""
    from workbench.config_file import read_yaml

    if run_dir is None or not (Path(run_dir) / "config.yaml").is_file():
        return None
    model = read_yaml(Path(run_dir) / "config.yaml").get("model")
    return model if isinstance(model, dict) else None


def run_export_weights(args) -> int:
    from workbench.engine.inference import load_run
    from workbench.pretrained.export import export_transformers
    from workbench.engine.run_categories import run_category_names

    run = load_run(args.run)
    known = run_category_names(args.run, run.cfg)
    if known is None:
        names = [f"class{i}" for i in range(run.cfg.model.num_classes)]
        print(f"[export-weights] NOTE: the run's category names are unknown (no usable {args.run}/categories.json "
              f"and no data.train {run.cfg.data.train or '(none)'} with {len(names)} classes): id2label gets "
              f"{names[0]}..{names[-1]}; edit config.json to name them", file=sys.stderr, flush=True)
    else:
        names = known[0]
    out = export_transformers(run.model, args.out, names)
    print(f"wrote {out} (config.json, model.safetensors"
          + (", attribute_heads.safetensors)" if run.cfg.model.attributes else ")"))
    return 0


def run_train(args) -> int:
    from workbench.engine.pipeline import train_and_evaluate

    cfg = load_train_config(args.config, weights=args.weights, resume_dir=args.out if args.resume else None)
    train_and_evaluate(cfg, args.out, device=args.device, resume=args.resume, evaluate=not args.no_eval,
                       overwrite=args.overwrite)
    return 0


def run_eval(args) -> int:
    import dataclasses

    if args.fashionpedia_results:
        return run_eval_fashionpedia(args)
    if not args.run:
        raise UsageError("workbench eval: --run RUN_DIR is required (or --fashionpedia-results FILE --data GT)")
    from workbench.device import resolve_device
    from workbench.engine.evaluate import write_metrics_json
    from workbench.engine.inference import eval_dataset, evaluate_model, load_run

    run = load_run(args.run, device=resolve_device(args.device or "auto"), checkpoint=args.checkpoint)
    print(f"[workbench] evaluating {run.checkpoint}", file=sys.stderr, flush=True)
    eval_cfg = run.cfg.eval
    try:
        if args.scoring:
            eval_cfg = dataclasses.replace(eval_cfg, scoring=args.scoring)
        if args.dedupe_iou is not None:
            eval_cfg = dataclasses.replace(eval_cfg, dedupe_iou=args.dedupe_iou)
    except ValueError as err:
        raise UsageError(f"workbench eval: {err}") from err
    dataset = eval_dataset(run.cfg, args.data, args.images)
    result = evaluate_model(run.model, args.data or run.cfg.data.val, dataset, eval_cfg, progress=not args.json)
    result.checkpoint = {"file": run.checkpoint.split(" ")[0], "description": run.checkpoint}
    out = Path(args.run) / ("metrics.json" if args.data is None else metrics_name(Path(args.run), result.data))
    write_metrics_json(result, out)
    print(f"wrote {out}", file=sys.stderr)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.table().to_string(index=False))
    return 0


def metrics_name(run_dir: Path, data: dict) -> str:
    """`metrics_<data file stem>.json`, or `metrics_<stem>-<hash8>.json` when that name already holds the
    metrics of other data (e.g. two folders' coco.json): a result never replaces another data's."""
    from workbench.data.io import read_json

    stem = Path(data["path"]).stem
    name = f"metrics_{stem}.json"
    if (run_dir / name).is_file() and read_json(run_dir / name).get("data", {}).get("path") != data["path"]:
        name = f"metrics_{stem}-{data['sha256'][:8]}.json"
    return name


def run_eval_fashionpedia(args) -> int:
    from workbench.metrics.fashionpedia_files import evaluate_fashionpedia_results

    if not args.data:
        raise UsageError("workbench eval: --fashionpedia-results needs --data GT.json (the ground truth)")
    result = evaluate_fashionpedia_results(args.data, args.fashionpedia_results)  # a DataError: workbench.cli
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for key, value in result.metrics.items():
            print(f"IoU+F1 {key:<14} {'n/a' if value is None else f'{value:.2f}'}")
        print(result.rule_text)
    return 0


def run_predict(args) -> int:
    from workbench.device import resolve_device
    from workbench.engine.pipeline import draw_predictions
    from workbench.engine.inference import load_run

    run = load_run(args.run, device=resolve_device(args.device or "auto"), checkpoint=args.checkpoint)
    print(f"[workbench] predicting with {run.checkpoint}", file=sys.stderr, flush=True)
    failures: list[str] = []
    for path in draw_predictions(run, args.images, args.out, failures=failures):
        print(path)
    for failure in failures:  # after the rest were drawn
        print(failure, file=sys.stderr)
    return 1 if failures else 0
