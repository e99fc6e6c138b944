"""tools/loadgen.py documents: distinct, small, and the bad ones really broken (the fault suite's
expectations rest on it); the doors themselves are exercised by tests/faults/."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from ocrstream.ocr.formats import sniff
from tools.loadgen import DONE, TRUNCATED, make_documents


def test_documents_are_distinct_small_and_the_bad_ones_truncated():
    docs = make_documents(60, seed=3, bad_every=25)
    assert len({hashlib.sha256(d.data).hexdigest() for d in docs}) == 60
    assert [i for i, d in enumerate(docs) if d.expected == TRUNCATED] == [24, 49]
    for d in docs:
        assert sniff(d.data) is not None  # every one passes the doors
        image = Image.open(io.BytesIO(d.data))
        if d.expected == DONE:
            image.load()
            assert image.width * image.height < 200_000
        else:
            with pytest.raises(OSError):
                image.load()
    assert make_documents(5, seed=3)[0].data == docs[0].data  # reproducible
    assert make_documents(5, seed=4)[0].data != docs[0].data
