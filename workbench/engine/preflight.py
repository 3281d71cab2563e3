"""Config vs data, checked before any work: a model whose heads do not fit the data trains silently on nothing.

`check_model_matches_data` compares `ModelConfig.num_classes` and `attributes` (names, values and their order,
and kinds) with a dataset's schema and raises one `ConfigError` listing every mismatch, each with the config
field path, what the data has, and the fix. Called by `train` (training and validation data) and `eval_dataset`.

Kinds: a `kind: single` head (softmax, one value) cannot learn a group the data labels with several values
(`multi`); the other way round is an ablation of `kind` (a sigmoid head on single-label data, scored in the
data's terms by evaluate.align_kinds) and is allowed. Two files of one run (training and validation data, or
the training data and `eval --data`) must give each group the same kind (`check_kinds_agree`): files imported
separately with different options otherwise train one kind and score another.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterable

from workbench.config import ModelConfig
from workbench.config_file import ConfigError
from workbench.data.problems import DataError, Problem
from workbench.data.schema import Schema

__all__ = ["check_images_exist", "check_kinds_agree", "check_model_matches_data"]


def check_model_matches_data(model: ModelConfig, schema: Schema, where: str) -> None:
    """Raise `ConfigError` unless `model`'s classes and attribute heads are exactly `schema`'s (from `where`)."""
    problems = []
    if model.num_classes != schema.num_classes:
        problems.append(f"model.num_classes is {model.num_classes} but the data has {schema.num_classes} "
                        f"categories {schema.category_names}; set model.num_classes: {schema.num_classes} "
                        "(or leave it out: it defaults to the data's)")
    data_attrs = schema.attribute_values  # names -> values; kind may differ on purpose (an ablation of `kind`)
    for spec in model.attributes:
        if spec.name not in data_attrs:
            close = difflib.get_close_matches(spec.name, list(data_attrs), n=1)
            hint = f"the data has `{close[0]}`; the config says `{spec.name}`" if close else \
                f"the data's attributes are {list(data_attrs)}"
            problems.append(f"model.attributes.{spec.name}: no such attribute in the data ({hint}); its head would "
                            "train on nothing")
        elif list(spec.values) != data_attrs[spec.name]:
            problems.append(f"model.attributes.{spec.name}: values {list(spec.values)} differ from the data's "
                            f"{data_attrs[spec.name]} (value ids are positions: same names, same order)")
        elif not spec.multi and spec.name in schema.multi_label_names:
            problems.append(f"model.attributes.{spec.name}.kind is single (a softmax head: one value per instance) "
                            "but the data's group is multi-label (several values per instance); set kind: multi, "
                            "or leave model.attributes out: it defaults to the data's")
    missing = [name for name in data_attrs if name not in model.attribute_names]
    close_to_config = {m for m in missing for n in model.attribute_names if difflib.get_close_matches(n, [m], n=1)}
    for name in missing:
        if name not in close_to_config:  # a near-miss was reported above from the config's side
            problems.append(f"model.attributes: the data has attribute `{name}` {data_attrs[name]} but the config "
                            "has no head for it; its labels would be unused (add it, or leave model.attributes "
                            "out: it defaults to the data's)")
    if problems:
        lines = "\n  ".join(problems)
        raise ConfigError(f"the config does not fit the data {where}:\n  {lines}")


def check_kinds_agree(first: Schema, first_where: str, second: Schema, second_where: str) -> None:
    """Raise `ConfigError` when a group both files have is single-label in one and multi-label in the other."""
    kinds = {a.name: a.kind for a in first.attributes}
    differ = [f"`{a.name}` is {kinds[a.name]} in {first_where} but {a.kind} in {second_where}"
              for a in second.attributes if a.name in kinds and kinds[a.name] != a.kind]
    if differ:
        raise ConfigError("the attribute groups' kinds differ between the files of one run: " + "; ".join(differ)
                          + " (files imported separately with different options, e.g. `data import-fashionpedia "
                          "--all-multi` for one only: import both the same way, or set the file's "
                          "\"attributes\": [{\"name\": ..., \"kind\": ...}] to agree)")


def check_images_exist(paths: Iterable[str], where: str) -> None:
    """Raise `DataError` naming every image of `where` that is not a file (one stat each): found at the first
    batch instead, it stops a run whose folder was already made."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise DataError([Problem("missing_image", p, f"no such image file (referenced by {where}; file_name is "
                                 "relative to that file's folder, or to data.image_root when set)")
                         for p in missing])
