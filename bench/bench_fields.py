"""Receipt fields without templates, scored as ICDAR 2019 SROIE task 3, end to end on our own OCR.

Data (skipped cleanly when absent): ``../shared/data/sroie-dev`` (60 receipts: ``pages.jsonl``
images, ``keys.jsonl`` keys) and ``../shared/data/sroie-kie`` (71 receipts, keys in
``pages.jsonl``); keys ``company``, ``date``, ``address``, ``total`` as printed, UPPER CASE.

Each receipt goes through :class:`ocrstream.ocr.OCRPipeline` (decode, clean-up, DBNet lines,
PP-OCRv6 recognition, word boxes, blocks, the store's post-processing) and
:func:`ocrstream.ocr.receipt_fields.extract_fields`, whose fields map to the keys
``vendor_name`` -> company, ``vendor_address`` -> address, ``date`` -> date, ``total`` -> total.

Metric (SROIE task 3): a field is right when its text equals the key after collapsing runs of
whitespace; precision = right / fields output, recall = right / keys, F1 per field and over all
fields of all receipts. Text is compared case-insensitively (``--case-sensitive`` to compare
case too: every SROIE key is upper case although receipts print mixed case, so a case-sensitive
score measures case, not reading). The "typed" F1 compares dates as dates (ISO, the key parsed
day first) and totals as amounts (Decimal, currency prefix dropped); company and address as text.
The "no spaces" F1 compares the texts with every space removed: it separates a misread character from
a space the key has and the reading has not (or the other way round), as the shared data's "CER
with all spaces removed" does for pages. "Keys as printed" (sets with a page transcription: dev)
counts the keys whose text, whitespace collapsed, occurs in the page's own ground-truth
transcription. The keys type spaces around punctuation inconsistently (one shop's address is
``NO.50,JALAN PBS 14/11,`` in one receipt's key and ``NO.50 , JALAN PBS 14/11 ,`` in another's, each
unlike its own page's transcription), so an extractor that reads exactly the transcription and copies
its text, spaces and all, could match at most these.
Confusions (``--confusions N``, default 15 per set): wrong outputs as ``key <- ours``.

CPU: ``time.process_time`` of the whole OCR of a page (decode .. build) against the extractor's
own time on the built Document (run ``--repeat`` times, the median kept), printed as a share.

The OCR of each receipt is cached (``--cache``, default ``/tmp/ocrstream-fields-cache``, one
JSON per image keyed by the image's SHA-256, the pipeline's settings, the inference backend and the
source of the OCR path, :func:`ocr_code_digest`): iterating on the extractor then costs no OCR,
and a change to clean-up, detection or recognition reads the receipts again. ``--no-cache`` reads everything again.
``--model`` reads with a fine-tuned recogniser (its manifest or folder, or an ``.onnx`` file; its sha256 is part
of the cache key), e.g. one tuned on the dev receipts' lines and scored on kie, which it never saw.

``--text truth`` runs the extractor on the page's ground-truth transcription instead of our OCR (sets whose
pages have one: dev; kie is skipped): each ground-truth box becomes a region with its transcribed text
(confidence 1), put in reading order, visual lines and blocks by the same code that orders detected lines
(:func:`ocrstream.ocr.detection.reading_order`, :func:`~ocrstream.ocr.detection.visual_line_ids`,
:func:`ocrstream.ocr.layout.block_ids`), its words spread evenly over the box. No post-processing (the
text is already right). This is how most published SROIE task-3 results are measured (on the organisers'
transcription, not their own OCR), and it splits our misses into the extractor's and the OCR's: a key
right on the transcription and wrong on our OCR is an OCR miss.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_fields.py [--sets dev,kie] [--limit N]
        [--threads 1] [--model DIR] [--cache DIR | --no-cache] [--confusions N] [--case-sensitive] [--show ID]
        [--text ocr|truth]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ocrstream.ocr import cleanup  # noqa: E402
from ocrstream.ocr.detection import reading_order, visual_line_ids  # noqa: E402
from ocrstream.ocr.document import Document  # noqa: E402
from ocrstream.ocr.layout import block_ids  # noqa: E402
from ocrstream.ocr.postprocess.correct import correct_region  # noqa: E402
from ocrstream.ocr.postprocess.processor import PostProcessor  # noqa: E402
from ocrstream.ocr.receipt_fields import extract_fields  # noqa: E402
from ocrstream.ocr.recognition.model_manifest import sha256_file  # noqa: E402
from ocrstream.ocr.recognition.recognizer import LineReading  # noqa: E402
from ocrstream.ocr.words import reading_fields  # noqa: E402

#: ``<repo>/../shared/data`` (a worktree one level deeper: ``<repo>/../../shared/data``).
SHARED = next((d / "shared" / "data" for d in (REPO.parent, REPO.parent.parent)
               if (d / "shared" / "data").is_dir()), REPO.parent / "shared" / "data")
#: SROIE key -> our field name.
KEYS = {"company": "vendor_name", "address": "vendor_address", "date": "date", "total": "total"}
CACHE_VERSION = 1


def load_set(name: str, shared: Path) -> list[dict[str, Any]] | None:
    """Records ``{id, path, keys: {company, date, address, total}, transcription, size, truth_lines}`` of set
    ``dev`` or ``kie`` (``transcription``: the page's ground-truth text, lines joined by spaces, and
    ``truth_lines``: its ground-truth boxes ``[{"box": [x0, y0, x1, y1], "text"}]``, where the set has them:
    dev; else None; ``size``: the page's ``(width, height)`` in px); None (printed: skipped) when its files
    are absent."""
    if name == "dev":
        folder = shared / "sroie-dev"
        pages, keys_file = folder / "pages.jsonl", folder / "keys.jsonl"
    elif name == "kie":
        folder = shared / "sroie-kie"
        pages = keys_file = folder / "pages.jsonl"
    else:
        raise ValueError(f"unknown set {name!r} (dev, kie)")
    if not pages.is_file() or not keys_file.is_file():
        print(f"skipped {name}: {pages} or {keys_file} absent")
        return None
    keys = {r["id"]: r for r in map(json.loads, keys_file.read_text().splitlines()) if r}
    out = []
    for line in pages.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            k = keys.get(r["id"])
            if k is not None:
                out.append({"id": r["id"], "path": folder / r["image"], "keys": {f: k.get(f) for f in KEYS},
                            "transcription": r["text"].replace("\n", " ") if isinstance(r.get("text"), str) else None,
                            "size": (r.get("width"), r.get("height")), "truth_lines": r.get("lines")})
    return out


def truth_regions(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Region dicts (as :meth:`OCRPipeline.read_page` emits them) of a page's ground-truth boxes
    ``[{"box": [x0, y0, x1, y1], "text"}]``: reading order, visual lines and blocks as for detected lines,
    confidence 1, the characters spread evenly over the box (words from them, as for a reading)."""
    kept = [line for line in lines if line["text"].strip()]
    quads = [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)
             for x0, y0, x1, y1 in (line["box"] for line in kept)]
    order = reading_order(quads)
    quads, kept = [quads[i] for i in order], [kept[i] for i in order]
    line_ids = visual_line_ids(quads)
    boxes = [[float(v) for v in line["box"]] for line in kept]
    regions = []
    for n, (line, quad, line_id, block) in enumerate(zip(kept, quads, line_ids, block_ids(boxes, line_ids))):
        text, width = line["text"], max(int(round(boxes[n][2] - boxes[n][0])), 1)
        pitch = width / len(text)
        reading = LineReading.from_chars(text, [1.0] * len(text), [pitch * (i + 0.5) for i in range(len(text))])
        regions.append({"region_id": f"p0-r{n}", "page_index": 0, "block_index": block, "line_index": line_id,
                        "order": n, "box": boxes[n], "quad": quad.tolist(), "detection_score": 1.0,
                        **reading_fields(reading, width, quad.tolist()), "source": "ocr"})
    return regions


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@functools.lru_cache(maxsize=1)
def ocr_code_digest() -> str:
    """SHA-256 (hex) of the OCR path's source: every module of ``ocrstream/ocr`` but the receipt-field
    extractor and post-processing (what this benchmark varies), so a cached reading is never one
    of older code."""
    root = Path(cleanup.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative == "receipt_fields.py" or relative.startswith("postprocess/"):
            continue
        digest.update(relative.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@dataclass
class OcrReader:
    """OCR with a JSON cache: pages and the recognised regions (before post-processing) plus the
    page's CPU seconds, per image SHA-256."""

    threads: int
    cache: Path | None
    model: Path | None = None
    _pipeline: Any = None

    def pipeline(self) -> Any:
        if self._pipeline is None:
            from ocrstream.ocr.detection import LineDetector
            from ocrstream.ocr.predictor import OCRPipeline
            from ocrstream.ocr.recognition.registry import load_recognizer
            self._pipeline = OCRPipeline(load_recognizer("ppocr", device="cpu", threads=self.threads, model=self.model),
                                         LineDetector(device="cpu", threads=self.threads), None,
                                         cleanup_steps=cleanup.DEFAULT_STEPS)
        return self._pipeline

    def read(self, path: Path) -> dict[str, Any]:
        """``{"pages", "regions", "cpu_s"}`` of the image at ``path`` (cached)."""
        data = path.read_bytes()
        key = hashlib.sha256(data + f"v{CACHE_VERSION}:{','.join(cleanup.DEFAULT_STEPS)}:"
                                    f"{os.environ.get('OCRSTREAM_INFERENCE', 'auto')}:{ocr_code_digest()}"
                                    f"{':' + sha256_file(self.model) if self.model else ''}".encode()
                             ).hexdigest()
        file = self.cache / f"{key}.json" if self.cache else None
        if file is not None and file.is_file():
            cached: dict[str, Any] = json.loads(file.read_text())
            return cached
        pipeline = self.pipeline()
        start = time.process_time()
        pages, regions = [], []
        for index, page in enumerate(pipeline.pages(data)):
            height, width = page.shape[:2]
            pages.append({"page_index": index, "width": int(width), "height": int(height)})
            regions += pipeline.read_page(index, pipeline.cut(page, index))
        out = {"pages": pages, "regions": regions, "cpu_s": time.process_time() - start}
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(json.dumps(out, default=_jsonable))
        return out


def norm(text: str | None, case_sensitive: bool = False) -> str:
    """Whitespace runs -> one space, ends stripped (and lower-cased unless ``case_sensitive``)."""
    out = " ".join((text or "").split())
    return out if case_sensitive else out.lower()


def no_spaces(text: str | None, case_sensitive: bool = False) -> str:
    """``text`` without any whitespace (and lower-cased unless ``case_sensitive``): separates a
    misread character from a space the key has and the reading has not, or the other way round."""
    return norm(text, case_sensitive).replace(" ", "")


def key_date(text: str) -> date | None:
    """A key's date (day first, as the receipts print), None when it does not parse."""
    from ocrstream.ocr.receipt_fields import parse_date
    found = parse_date(text)
    return found[0] if found else None


def key_amount(text: str) -> Decimal | None:
    """A key's amount without currency or spaces, None when it does not parse."""
    digits = re.sub(r"[^0-9.\-]", "", text.replace(",", ""))
    try:
        return Decimal(digits) if digits else None
    except InvalidOperation:
        return None


@dataclass
class Score:
    """Counts per field: outputs, keys, right (text), right (typed), right with all spaces removed;
    keys found as printed in the page's ground-truth transcription (``printed``, of ``transcribed``
    keys: pages with a transcription); confusions."""

    out: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    keys: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    right: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    typed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    spaceless: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    printed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    transcribed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    confusions: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, doc_id: str, keys: dict[str, str | None], fields: dict[str, Any], case_sensitive: bool,
            transcription: str | None = None) -> None:
        page_text = None if transcription is None else norm(transcription, case_sensitive)
        for key, name in KEYS.items():
            ref = keys.get(key)
            got = fields.get(name)
            self.keys[key] += bool(ref)
            if ref and page_text is not None:
                self.transcribed[key] += 1
                self.printed[key] += norm(ref, case_sensitive) in page_text
            self.out[key] += got is not None
            if got is None:
                if ref:
                    self.confusions.append((doc_id, key, ref, "(none)"))
                continue
            ok = bool(ref) and norm(got["text"], case_sensitive) == norm(ref, case_sensitive)
            self.right[key] += ok
            self.typed[key] += ref is not None and bool(ref) and typed_equal(key, ref, got, case_sensitive)
            self.spaceless[key] += bool(ref) and no_spaces(got["text"], case_sensitive) == no_spaces(ref, case_sensitive)
            if not ok:
                self.confusions.append((doc_id, key, ref or "(no key)", got["text"]))


def typed_equal(key: str, ref: str, got: dict[str, Any], case_sensitive: bool) -> bool:
    """Dates as dates, totals as amounts, text fields as text."""
    if key == "date":
        d = key_date(ref)
        return d is not None and got.get("value") == d.isoformat()
    if key == "total":
        a = key_amount(ref)
        return a is not None and got.get("value") is not None and Decimal(str(got["value"])) == a
    return norm(got["text"], case_sensitive) == norm(ref, case_sensitive)


def prf(right: int, out: int, keys: int) -> tuple[float, float, float]:
    p = right / out if out else 0.0
    r = right / keys if keys else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def report(name: str, n: int, score: Score, cpu_page: list[float], cpu_extract: list[float], confusions: int) -> None:
    print(f"\n## {name}: {n} receipts")
    print("| field | P | R | F1 | F1 typed | F1 no spaces | right / out / keys | keys as printed |")
    print("|---|---|---|---|---|---|---|---|")
    for key in [*KEYS, "all"]:
        counts = (score.right, score.out, score.keys, score.typed, score.spaceless, score.printed, score.transcribed)
        right, out, keys, typed, spaceless, printed, transcribed = (
            sum(d.values()) if key == "all" else d[key] for d in counts)
        p, r, f = prf(right, out, keys)
        ft, fs = prf(typed, out, keys)[2], prf(spaceless, out, keys)[2]
        label = f"**{key}**" if key == "all" else key
        as_printed = f"{printed} / {transcribed}" if transcribed else "-"
        print(f"| {label} | {p:.3f} | {r:.3f} | {f:.3f} | {ft:.3f} | {fs:.3f} | {right} / {out} / {keys} | {as_printed} |")
    if sum(score.transcribed.values()):
        print("keys as printed: keys whose text (whitespace collapsed) is in the page's own ground-truth "
              "transcription; an extractor copying that text exactly could match at most these")
    page, extract = sum(cpu_page), sum(cpu_extract)
    print(f"CPU: OCR {1000 * page / max(n, 1):.0f} ms/page, extractor {1000 * extract / max(n, 1):.2f} ms/page "
          f"(max {1000 * max(cpu_extract, default=0):.2f}) = {100 * extract / max(page, 1e-9):.2f} % of a page's CPU")
    if confusions:
        print(f"confusions (first {confusions} of {len(score.confusions)}): id field: key <- ours")
        for doc_id, key, ref, got in score.confusions[:confusions]:
            print(f"  {doc_id} {key}: {ref!r} <- {got!r}")


def timed(fn: Callable[[], Any], repeat: int) -> tuple[Any, float]:
    """``fn()`` and its median CPU seconds over ``repeat`` runs."""
    times, out = [], None
    for _ in range(max(repeat, 1)):
        start = time.process_time()
        out = fn()
        times.append(time.process_time() - start)
    return out, statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("OCRSTREAM_SHARED_DATA", SHARED)),
                        help="the folder holding sroie-dev/ and sroie-kie/ (default ../shared/data)")
    parser.add_argument("--sets", default="dev,kie", help="comma list of dev, kie")
    parser.add_argument("--limit", type=int, default=None, help="first N receipts of each set")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ocrstream-fields-cache"))
    parser.add_argument("--model", type=Path, default=None,
                        help="a fine-tuned recogniser (manifest.json, its folder or an .onnx file; default: the shipped one)")
    parser.add_argument("--no-cache", action="store_true", help="OCR every receipt again, cache nothing")
    parser.add_argument("--confusions", type=int, default=15, help="wrong fields listed per set")
    parser.add_argument("--case-sensitive", action="store_true", help="compare case too")
    parser.add_argument("--repeat", type=int, default=3, help="extractor runs per page (median CPU kept)")
    parser.add_argument("--show", default=None, help="print the lines and fields of this receipt id")
    parser.add_argument("--text", choices=("ocr", "truth"), default="ocr",
                        help="extract from our OCR (default) or from the page's ground-truth transcription (dev)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    model = args.model.resolve() if args.model else None
    if model is not None and model.is_dir():
        model = model / "manifest.json"
    reader = OcrReader(args.threads, None if args.no_cache else args.cache, model)
    postprocessor = PostProcessor()
    for name in args.sets.split(","):
        records = load_set(name, args.data)
        if records is None:
            continue
        records = records[: args.limit] if args.limit else records
        if args.text == "truth" and any(r["truth_lines"] is None for r in records):
            print(f"skipped {name}: its pages have no ground-truth transcription (--text truth)")
            continue
        score, cpu_page, cpu_extract = Score(), [], []
        for record in records:
            ocr: dict[str, Any]
            if args.text == "truth":
                width, height = record["size"]
                ocr = {"pages": [{"page_index": 0, "width": width, "height": height}], "cpu_s": 0.0}
                regions, post_s = truth_regions(record["truth_lines"]), 0.0
            else:
                ocr = reader.read(record["path"])
                start = time.process_time()
                regions = [correct_region(postprocessor, r) for r in ocr["regions"]]
                post_s = time.process_time() - start
            doc = Document.from_results({"document_id": record["id"], "status": "done", "pages": ocr["pages"],
                                         "regions": regions})
            probs = {r["region_id"]: r["char_probs"] for r in regions if r.get("char_probs")}
            fields, extract_s = timed(functools.partial(extract_fields, doc, char_probs=probs), args.repeat)
            cpu_page.append(ocr["cpu_s"] + post_s + extract_s)
            cpu_extract.append(extract_s)
            flat = {k: v.as_json() for k, v in fields.items()}
            score.add(record["id"], record["keys"], flat, args.case_sensitive, record["transcription"])
            if args.show == record["id"]:
                print(doc.render_text())
                print(json.dumps({k: {"text": v["text"], "value": v.get("value"), "confidence": v["confidence"]}
                                  for k, v in flat.items()}, indent=1, default=str))
                print(record["keys"])
        report(f"{name} ({'ground-truth transcription' if args.text == 'truth' else 'our OCR'})", len(records),
               score, cpu_page, cpu_extract, args.confusions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
