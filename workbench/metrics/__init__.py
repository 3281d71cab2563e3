"""Metrics, one file per metric. Instance segmentation: mask AP and its true positives (coco_segm.py, over
coco_index.py), joint AP (joint_ap.py), attribute accuracy and multi-label F1 on matched pairs (attributes.py),
Fashionpedia's AP(IoU+F1) (fashionpedia.py, results files in fashionpedia_files.py), gathered in
instance_result.py's `EvalResult` (engine/evaluate.py runs them on a model's predictions). Panoptic and semantic:
PQ (panoptic.py, on-disk form in panoptic_files.py), semantic segmentation scores (semantic.py), attributes on
panoptic segments and joint PQ (panoptic_attributes.py). They take numpy or torch inputs, return result types
whose `to_dict()` / `scalars()` keys are the TensorBoard tags, and import nothing above `workbench.data`
(tests/test_layering.py)."""
