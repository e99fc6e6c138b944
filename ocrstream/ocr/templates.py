"""Fixed-layout templates: named regions of known forms, cut without text detection.

Each device or form prints the same layout, so a template (YAML, one file per document type,
in ``ocrstream/ocr/templates/`` or ``OCRSTREAM_TEMPLATES_DIR``) lists its named regions:
a box relative to the page (``[x0, y0, x1, y1]`` in 0..1), the field type (text, integer,
decimal, date, time, code), an optional full-match regex, unit and range. A document names its
template at ingest (``ocrstream submit --template NAME``, the HTTP form field ``template``, the raw
topic header ``template``); the regions then carry their field specs downstream to the store
stage's validation.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ocrstream.errors import UnknownTemplateError
from ocrstream.ocr.document import FieldSpec

_FIELD_KEYS = tuple(f.name for f in fields(FieldSpec))


class TemplateRegion(BaseModel):
    """One named field of a template; ``box`` relative to the page, ``(x0, y0, x1, y1)`` in [0, 1].

    In the YAML the field's keys (``name``, ``type``, ``regex``, ``unit``, ``min``, ``max``: see
    :class:`ocrstream.ocr.document.FieldSpec`, the one definition) sit beside ``box`` and ``page``;
    they are validated by FieldSpec itself (known type, compiling regex, unit/range on numbers only).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    box: tuple[float, float, float, float]
    page: int = 0
    field_spec: FieldSpec

    @model_validator(mode="before")
    @classmethod
    def _gather_field_keys(cls, data: Any) -> Any:
        """Move the flat FieldSpec keys of a YAML region into ``field_spec``."""
        if isinstance(data, dict) and "field_spec" not in data:
            data = dict(data)
            data["field_spec"] = {k: data.pop(k) for k in _FIELD_KEYS if k in data}
        return data

    @field_validator("box")
    @classmethod
    def _inside_page(cls, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"box {box} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        return box

    @property
    def name(self) -> str:
        """The field's name."""
        return self.field_spec.name

    def spec(self) -> FieldSpec:
        """The field this region holds, as the store stage validates it."""
        return self.field_spec

    def field(self) -> dict[str, Any]:
        """The field spec carried by the region's events (name, type and the optional checks)."""
        return {k: v for k, v in asdict(self.field_spec).items() if v is not None}

    def pixel_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box in pixels of a ``width`` x ``height`` page (integers, clipped to the page)."""
        x0, y0, x1, y1 = self.box
        return (int(x0 * width), int(y0 * height), min(width, round(x1 * width)), min(height, round(y1 * height)))


class Template(BaseModel):
    """A document type's layout."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    description: str = ""
    anchors: tuple[str, ...] = ()
    regions: tuple[TemplateRegion, ...] = Field(min_length=1)


def load_template(path: Path) -> Template:
    """Parse and validate one template file; raises ValueError naming the file on errors."""
    try:
        return Template.model_validate(yaml.safe_load(path.read_text("utf-8")))
    except Exception as exc:
        raise ValueError(f"invalid template {path}: {exc}") from exc


@lru_cache(maxsize=8)
def load_templates(extra_dir: str | None = None) -> dict[str, Template]:
    """Templates shipped with ocrstream plus those in ``extra_dir`` (which win), by name."""
    shipped = resources.files("ocrstream.ocr").joinpath("templates")
    files = sorted(Path(str(f)) for f in shipped.iterdir())
    if extra_dir:
        files += sorted(Path(extra_dir).iterdir())
    templates = {}
    for path in files:  # later files (extra_dir) replace shipped ones of the same name
        if path.suffix in (".yaml", ".yml"):
            template = load_template(path)
            templates[template.name] = template
    return templates


def get_template(name: str, extra_dir: str | None = None) -> Template:
    """The template called ``name``; raises UnknownTemplateError listing the known ones."""
    templates = load_templates(extra_dir)
    if name not in templates:
        raise UnknownTemplateError(f"unknown template {name!r}; known: {', '.join(sorted(templates))}")
    return templates[name]
