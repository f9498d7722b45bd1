"""The base scenario of a study as a plain document (what key paths patch), with its own variants."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devices import yaml_file


@dataclass
class BaseDocument:
    """The base scenario as a plain document, with the study's base variant already applied."""

    path: Path
    doc: dict[str, Any]
    variants: dict[str, dict[str, Any]]

    @classmethod
    def read(cls, path: Path, variant: str | None = None) -> BaseDocument:
        from cosim.scenario import load

        load(path, variant=variant)  # the whole validation once, with the scenario's own error messages
        data = yaml_file.read(path).data
        data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
        variants = data.pop("variants", None) or {}
        base = cls(path.resolve(), data, variants)
        if variant is not None:
            base.doc = base.with_variant(variant)
        return base

    @property
    def variant_names(self) -> list[str]:
        return list(self.variants)

    def with_variant(self, name: str) -> dict[str, Any]:
        if name not in self.variants:
            raise KeyError(f"no variant {name!r}; the scenario has: {', '.join(self.variants) or 'none'}")
        out = copy.deepcopy(self.doc)
        out.update(copy.deepcopy(self.variants[name]))
        out["name"] = f"{out.get('name', 'scenario')}-{name}"
        return out

    def patched_copy(self) -> dict[str, Any]:
        return copy.deepcopy(self.doc)


__all__ = ["BaseDocument"]
