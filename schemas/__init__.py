"""Versioned JSON Schemas of the event contracts, one file per topic (``<topic>.schema.json``),
generated from the typed models in :mod:`ocrstream.contracts.event_models` (``python -m schemas.generate``).
The runtime validates with the models; :func:`validator` is for tests and outside consumers.

Compatibility rule: within a major version (``.v1``) only additive, optional changes are allowed;
anything else is a new topic (``.v2``). Each event names its schema in its ``schema`` field.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator


@cache
def validator(topic: str) -> Draft202012Validator:
    """The JSON Schema validator of ``topic``; raises FileNotFoundError for unknown topics and
    ImportError when jsonschema (the ``schemas`` extra, in ``test`` too) is not installed."""
    try:
        from jsonschema import Draft202012Validator
    except ImportError as exc:
        raise ImportError(f"{exc}: validating against the schemas needs jsonschema "
                          "(pip install 'ocrstream[schemas]')") from exc
    text = resources.files(__name__).joinpath(f"{topic}.schema.json").read_text("utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)
