"""Drawing a run's outputs: prediction overlays (overlay.py) and the loss curve (loss_curve.py).

Below both the pipeline (`workbench.engine`, which writes them into run directories and TensorBoard) and the
inspector (`workbench.inspect`, which builds its figures on them); imports neither.
"""
