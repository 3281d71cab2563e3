"""`workbench export RUN_DIR --format onnx OUT.onnx`."""
from __future__ import annotations

from pathlib import Path

from workbench.errors import UsageError, WorkbenchError

FORMATS = ("onnx",)


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a trained run's inference graph to run outside PyTorch (ONNX)")
    p.add_argument("run", help="run directory (config.yaml and model_final.pt or last.pt)")
    p.add_argument("--format", choices=FORMATS, required=True, help="onnx: image -> class, mask, attribute logits")
    p.add_argument("out", help="output file, e.g. model.onnx")
    p.add_argument("--example-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="size traced (multiples of the model's size_divisibility; the graph stays dynamic)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from workbench.deploy.onnx_export import export_onnx
    from workbench.engine.inference import load_run

    out = Path(args.out)
    if out.suffix != ".onnx":
        raise UsageError(f"workbench export: {out} should end in .onnx (--format onnx)")
    if out.exists() and not args.overwrite:  # checked before any work; the write itself is atomic
        raise WorkbenchError(f"workbench export: {out} exists; pass --overwrite to replace it")
    if out.is_dir():
        raise UsageError(f"workbench export: {out} is a folder, not a file")
    run = load_run(args.run, device="cpu")
    result = export_onnx(run.model, out, example_size=tuple(args.example_size) if args.example_size else None)
    print(f"[export] {result.note}", flush=True)
    print(f"[export] {result.path}: input {result.input_name} float32 (B, 3, H, W) normalised, H and W multiples of "
          f"{run.cfg.model.size_divisibility}; outputs {', '.join(result.output_names)} (opset {result.opset})",
          flush=True)
    return 0
