"""Metrics, one file per metric: PQ (panoptic.py, on-disk form in panoptic_files.py), semantic segmentation
scores (semantic.py), attributes on panoptic segments and joint PQ (panoptic_attributes.py). They take numpy or
torch inputs, return frozen result types whose `to_dict()` keys are the TensorBoard tags, and import nothing above
`workbench.data` (tests/test_layering.py)."""
