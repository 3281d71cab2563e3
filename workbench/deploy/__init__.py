"""Running a trained model outside PyTorch: `workbench export RUN_DIR --format onnx OUT.onnx` (onnx_export.py)."""
