"""Fixed-layout templates: named regions of known forms, cut without text detection.

Each device or form prints the same layout, so a template (YAML, one file per document type,
in ``services/preprocess/templates/`` or ``OCRSTREAM_TEMPLATES_DIR``) lists its named regions:
a box relative to the page (``[x0, y0, x1, y1]`` in 0..1), the field type (text, integer,
decimal, date, time, code), an optional full-match regex, unit and range. A document names its
template at ingest (``ocrstream submit --template NAME``, the HTTP form field ``template``, the raw
topic header ``template``); the regions then carry their field specs downstream to the store
stage's validation.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.core.errors import UnknownTemplateError
from services.document import FieldSpec


class TemplateRegion(BaseModel):
    """One named field of a template; ``box`` relative to the page, ``(x0, y0, x1, y1)`` in [0, 1]."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    box: tuple[float, float, float, float]
    type: Literal["text", "integer", "decimal", "date", "time", "code"] = "text"
    regex: str | None = None
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    page: int = 0

    @field_validator("box")
    @classmethod
    def _inside_page(cls, box):
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"box {box} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        return box

    @model_validator(mode="after")
    def _valid_field(self):
        self.spec()  # FieldSpec's own checks: known type, compiling regex, unit/range on numbers only
        return self

    def spec(self) -> FieldSpec:
        """The field this region holds, as the store stage validates it."""
        return FieldSpec(**self.field())

    def field(self) -> dict:
        """The field spec carried by the region's events (name, type and the optional checks)."""
        return self.model_dump(exclude={"box", "page"}, exclude_none=True)

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
    shipped = resources.files("services.preprocess").joinpath("templates")
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
