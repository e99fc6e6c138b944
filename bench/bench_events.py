"""Cost of reading and writing one large event: jsonschema (before) vs the msgspec models (after).

Builds an ``ocr.recognized.v1`` event of ``--regions`` regions (default 2,000) shaped like real
ones (box, quad, detection score, block, crop key, ~24 characters of text with one probability
per character, word boxes) and prints, per variant, the median CPU time over ``--repeat`` runs:

* before: ``json.loads`` + JSON Schema validation (jsonschema Draft 2020-12, the runtime check
  until issue 12) and ``json.dumps`` + the same validation for encoding;
* after: :func:`ocrstream.contracts.events.decode` (msgspec decode + every model constraint) and
  :func:`ocrstream.contracts.events.encode` (msgspec encode + one validating decode).

It also prints the event's size with ``char_probs`` as before (rounded to 3 decimals) and as now
(:func:`~ocrstream.contracts.event_models.compact_probs`). Target: decode + validate <= 5 ms.

    .venv/bin/python bench/bench_events.py [--regions 2000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import schemas  # noqa: E402
from ocrstream.contracts import events  # noqa: E402
from ocrstream.contracts.event_models import compact_probs  # noqa: E402

WORDS = ["TOTAL", "RM", "125.40", "INVOICE", "NO", "20931", "Meeting", "moved", "to", "Friday", "Room", "4B"]


def recognized_event(n_regions: int, compact: bool, seed: int = 0) -> dict:
    """A realistic ``ocr.recognized.v1`` event as builtins (``compact``: today's char_probs)."""
    rng = random.Random(seed)
    regions = []
    for i in range(n_regions):
        text = " ".join(rng.choice(WORDS) for _ in range(4))[:24]
        probs = [min(1.0, 0.8 + rng.random() * 0.25) for _ in text]
        x0, y0 = round(rng.uniform(0, 2000), 1), round(40.0 * (i % 60), 1)
        x1, y1 = round(x0 + 12.0 * len(text), 1), round(y0 + 30.0, 1)
        words, start = [], 0
        for w in text.split(" "):
            words.append({"text": w, "box": [round(x0 + 12.0 * start, 1), y0, round(x0 + 12.0 * (start + len(w)), 1), y1],
                          "confidence": round(sum(probs[start:start + len(w)]) / max(1, len(w)), 4)})
            start += len(w) + 1
        regions.append({
            "region_id": f"p{i // 60}-r{i % 60}", "page_index": i // 60, "block_index": (i % 60) // 6,
            "crop_key": f"crops/{'d' * 32}/p{i // 60:04d}/r{i % 60:05d}.png", "line_index": i % 60, "order": i % 60,
            "box": [x0, y0, x1, y1], "quad": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]],
            "detection_score": round(rng.uniform(0.6, 1.0), 4),
            "text": text, "confidence": round(sum(probs) / len(probs), 4),
            "char_probs": compact_probs(probs) if compact else [round(p, 3) for p in probs],
            "words": words})
    pages = [{"page_index": p, "width": 2480, "height": 3508} for p in range((n_regions + 59) // 60)]
    return {"schema": events.RECOGNIZED, "document_id": "d" * 32,
            "document": {"object_key": "originals/ab/" + "ab" * 32, "content_sha256": "ab" * 32, "size_bytes": 123456,
                         "filename": "big.pdf", "source": "cli", "template": None},
            "timestamps": {"submitted": events.now_iso(), "ingested": events.now_iso(),
                           "preprocessed": events.now_iso(), "recognized": events.now_iso()},
            "pages": pages, "recognizer": {"name": "ppocr", "provider": "CPUExecutionProvider"}, "regions": regions}


def cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median CPU milliseconds of ``fn()`` over ``repeat`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regions", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--before-repeat", type=int, default=3, help="runs of the (slow) jsonschema variant")
    args = parser.parse_args()

    topic = events.RECOGNIZED
    old = recognized_event(args.regions, compact=False)
    new = recognized_event(args.regions, compact=True)
    old_bytes = json.dumps(old, separators=(",", ":"), ensure_ascii=False).encode()
    new_bytes = events.encode(topic, events.from_json_object(topic, new))
    validator = schemas.validator(topic)

    def before_decode() -> None:
        validator.validate(json.loads(old_bytes))

    def before_encode() -> None:
        validator.validate(old)
        json.dumps(old, separators=(",", ":"), ensure_ascii=False).encode()

    typed = events.decode(topic, new_bytes)
    rows = [
        ("before: json.loads + jsonschema validate", cpu_ms(before_decode, args.before_repeat)),
        ("reference: json.loads alone (parse, no validation)", cpu_ms(lambda: json.loads(new_bytes), args.repeat)),
        ("before: jsonschema validate + json.dumps", cpu_ms(before_encode, args.before_repeat)),
        ("after:  events.decode (msgspec, validated)", cpu_ms(lambda: events.decode(topic, new_bytes), args.repeat)),
        ("after:  events.encode (msgspec + validating decode)", cpu_ms(lambda: events.encode(topic, typed),
                                                                        args.repeat)),
    ]
    chars = sum(len(r["text"]) for r in new["regions"])
    print(f"ocr.recognized.v1 event: {args.regions} regions, {len(new['pages'])} pages, {chars} characters, "
          f"{sum(len(r['words']) for r in new['regions'])} words")
    for name, ms in rows:
        print(f"  {name:<52} {ms:9.2f} ms CPU (median)")
    print(f"  decode speed-up: {rows[0][1] / rows[3][1]:.0f}x; typed decode costs {rows[3][1] / rows[1][1]:.2f}x "
          f"a bare json.loads; target decode + validate <= 5 ms: {'met' if rows[3][1] <= 5 else 'NOT met'} "
          "(CPU time inflates on a loaded machine: compare with the json.loads reference)")
    print(f"  size: {len(old_bytes):,} bytes with char_probs rounded to 3 decimals (before), "
          f"{len(new_bytes):,} bytes compact (after): {100 * (1 - len(new_bytes) / len(old_bytes)):.1f}% smaller")


if __name__ == "__main__":
    main()
