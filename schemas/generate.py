"""Write the JSON Schemas of the event contracts from the typed models.

``python -m schemas.generate`` (re)writes ``schemas/<topic>.schema.json`` for every model in
:data:`ocrstream.contracts.event_models.MODELS`; ``--check`` only reports files that differ (exit 1).
The models are the source; a test checks the committed files equal :func:`generate`'s output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from ocrstream.contracts.event_models import MODELS

HERE = Path(__file__).resolve().parent
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def schema_of(topic: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``topic``'s model: the event object at the top,
    its parts under ``$defs``. Raises KeyError for a topic without a model."""
    model = MODELS[topic]
    (_,), components = msgspec.json.schema_components([model], ref_template="#/$defs/{name}")
    top = components.pop(model.__name__)
    doc = (model.__doc__ or "").strip().split("\n\n")[0]
    schema = {"$schema": DRAFT, "$id": f"https://ocrstream.dev/schemas/{topic}.schema.json",
              **top, "description": doc, "$defs": dict(sorted(components.items()))}
    return _collapse_descriptions(schema)


def _collapse_descriptions(node: Any) -> Any:
    """``node`` with every ``description`` string's whitespace runs collapsed to one space.

    msgspec copies a Struct's docstring into its schema's ``description``, and how it treats the
    docstring's indentation changed between releases (0.22 kept it, 0.23 does not): collapsing makes
    the generated files independent of that."""
    if isinstance(node, dict):
        return {key: " ".join(value.split()) if key == "description" and isinstance(value, str)
                else _collapse_descriptions(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_collapse_descriptions(item) for item in node]
    return node


def render(topic: str) -> str:
    """The schema file's text: 2-space indented JSON, keys in model order, trailing newline."""
    return json.dumps(schema_of(topic), indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[Path, str]:
    """``{path: text}`` of every schema file."""
    return {HERE / f"{topic}.schema.json": render(topic) for topic in MODELS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report schema files that differ (exit 1)")
    args = parser.parse_args(argv)
    stale = [path for path, text in generate().items()
             if not path.exists() or path.read_text("utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path.name} differs from the models; run python -m schemas.generate", file=sys.stderr)
        return 1 if stale else 0
    for path, text in generate().items():
        if path in stale:
            path.write_text(text, "utf-8")
            print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
