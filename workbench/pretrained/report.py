"""`LoadReport`: what a checkpoint gave the model, what is new, what was left out and why."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ClassRows:
    """The class head's rows: `carried` {our category: checkpoint category}, `new` ours the checkpoint lacks
    (fresh rows, as in a new model), `dropped` the checkpoint's with no counterpart; the no-object row is
    always carried. `matched_by` is "name" or "position" (no names given and the class counts agree)."""

    carried: dict[str, str]
    new: tuple[str, ...]
    dropped: tuple[str, ...]
    matched_by: str


@dataclass(frozen=True)
class LoadReport:
    """loaded: our state-dict keys filled from the checkpoint. new: (our key, why) left as initialised.
    dropped: (checkpoint key, why) not loaded. `str(report)` is the summary printed before training;
    `to_dict()`/`save()` the full record for the run directory."""

    source: str
    kind: str
    naming: str
    loaded: tuple[str, ...]
    new: tuple[tuple[str, str], ...]
    dropped: tuple[tuple[str, str], ...]
    class_rows: ClassRows
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["new"] = [{"key": k, "why": w} for k, w in self.new]
        d["dropped"] = [{"key": k, "why": w} for k, w in self.dropped]
        d["loaded"] = list(self.loaded)
        return d

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def __str__(self) -> str:
        rows = self.class_rows
        lines = [f"[pretrained] {self.source} ({self.kind}, {self.naming} names)",
                 f"  loaded   {len(self.loaded)} tensors"]
        shown = ", ".join(f"{ours} <- {theirs}" if ours != theirs else ours
                          for ours, theirs in list(rows.carried.items())[:8])
        more = f" (+{len(rows.carried) - 8} more)" if len(rows.carried) > 8 else ""
        lines.append(f"  class rows carried by {rows.matched_by}: {len(rows.carried)} + no-object"
                     + (f": {shown}{more}" if rows.carried else ""))
        if rows.new:
            lines.append(f"  class rows new ({len(rows.new)}): {', '.join(rows.new)}")
        if rows.dropped:
            tail = ", ".join(rows.dropped[:8]) + (f" (+{len(rows.dropped) - 8} more)" if len(rows.dropped) > 8 else "")
            lines.append(f"  class rows dropped ({len(rows.dropped)}): {tail}")
        for key, why in self.new:
            lines.append(f"  new      {key}: {why}")
        by_reason: dict[str, list[str]] = {}
        for key, why in self.dropped:
            by_reason.setdefault(why, []).append(key)
        for why, keys in by_reason.items():
            more = f" (+{len(keys) - 1} like it)" if len(keys) > 1 else ""
            lines.append(f"  dropped  {keys[0]}{more}: {why}")
        lines.extend(f"  note     {n}" for n in self.notes)
        return "\n".join(lines)
