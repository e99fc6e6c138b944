"""Does post-processing (ocrstream/ocr/postprocess/) correct real receipt text? Per rule, measured.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_postprocess.py [--limit N] [--split test]
        [--charset latin|all] [--sweep] [--refresh]

Data: ``<repo>/../shared/data/sroie-dev/lines.jsonl`` (1500 SROIE line crops; exits 0 with a
message when absent). The shipped ``ppocr`` recogniser reads every crop once; readings (text,
confidence, char_probs) are cached in ``.ocrstream/cache/`` keyed by the sha256 of lines.jsonl,
of ``ocrstream/ocr/recognition/ppocr.py`` and the charset, so reruns take seconds (``--refresh`` rereads).

Split: lines of even-numbered receipts (``sroie_NNN``, NNN even) are the *tuning* split where
the module's thresholds were chosen (``--sweep`` prints those sweeps); the tables report on the
odd-numbered receipts (*test*) unless ``--split`` says otherwise. Receipts never straddle splits.

Scores (``ocrstream.ocr.evaluation``, case-insensitive as the all-upper-case ground truth requires):
CER, CER without spaces, WER (micro-averaged), and per line whether the CER rose (worse) or fell
(better). Field rules need a field type: a line is a field when its *ground truth* validates as
a date, time, integer or RM decimal, i.e. a template would have named it so; those lines are
post-processed as that field. ``needs_review``: precision/recall of flagging lines whose
reading has CER > 0.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ocrstream.ocr.evaluation import cer, char_edits, wer  # noqa: E402
from ocrstream.ocr.postprocess.processor import (  # noqa: E402
    DEFAULT_RULES,
    RULES,
    Corrected,
    FieldSpec,
    PostProcessor,
)

DATA = REPO.parent / "shared" / "data" / "sroie-dev"
CACHE = REPO / ".ocrstream" / "cache"
#: field types a line may be, tried in this order on its ground truth (unit: SROIE is Malaysian;
#: decimal before time, as "0.24" also reads as a time with "." between hours and minutes).
FIELD_SPECS = (
    FieldSpec("date", "date"),
    FieldSpec("integer", "integer"),
    FieldSpec("amount", "decimal", unit="RM"),
    FieldSpec("time", "time"),
)


@dataclass(frozen=True)
class Line:
    """One dev line: id, ground truth and the recogniser's reading."""

    id: str
    ref: str
    text: str
    confidence: float
    char_probs: tuple[float, ...]

    @property
    def receipt(self) -> int:
        return int(self.id.split("_")[1])


# -- data and cache ----------------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cache_path(charset: str) -> Path:
    """Cache file of readings for this data, recogniser source and charset."""
    key = hashlib.sha256(
        f"{_sha(DATA / 'lines.jsonl')}:{_sha(REPO / 'ocrstream/ocr/recognition/ppocr.py')}:{charset}".encode()
    ).hexdigest()[:16]
    return CACHE / f"postprocess-ppocr-{charset}-{key}.jsonl"


def _recognise(records: Sequence[dict], charset: str) -> list[dict]:
    """Read ``records``' crops with the shipped ppocr recogniser, 64 at a time."""
    import cv2

    from ocrstream.ocr.recognition.registry import load_recognizer

    rec = load_recognizer("ppocr", charset=charset)
    out = []
    for start in range(0, len(records), 64):
        batch = records[start : start + 64]
        readings = rec.recognize([cv2.imread(str(DATA / r["image"])) for r in batch])
        out += [{"id": r["id"], "text": x.text, "confidence": x.confidence, "char_probs": list(x.char_probs)}
                for r, x in zip(batch, readings)]
    return out


def load_lines(limit: int | None, charset: str, refresh: bool) -> list[Line]:
    """The first ``limit`` dev lines with readings, recognising only those not cached yet."""
    with open(DATA / "lines.jsonl") as f:
        records = [json.loads(row) for row in f][:limit]
    path = cache_path(charset)
    cached = {}
    if path.exists() and not refresh:
        with open(path) as f:
            cached = {r["id"]: r for r in map(json.loads, f)}
    missing = [r for r in records if r["id"] not in cached]
    if missing:
        print(f"recognising {len(missing)} lines (ppocr, charset={charset}) -> {path}", file=sys.stderr)
        fresh = _recognise(missing, charset)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w" if refresh else "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in fresh)
        cached.update({r["id"]: r for r in fresh})
    return [Line(r["id"], r["text"], cached[r["id"]]["text"], cached[r["id"]]["confidence"],
                 tuple(cached[r["id"]]["char_probs"])) for r in records]


def split(lines: Sequence[Line], name: str) -> list[Line]:
    """``tune`` (even receipt numbers), ``test`` (odd) or ``all``."""
    if name == "all":
        return list(lines)
    parity = 0 if name == "tune" else 1
    return [x for x in lines if x.receipt % 2 == parity]


# -- scoring -------------------------------------------------------------------------------------


@functools.cache
def field_of(ref: str) -> FieldSpec | None:
    """The first of :data:`FIELD_SPECS` whose validation the ground truth passes, or None."""
    plain = PostProcessor(enabled_rules=())
    for spec in FIELD_SPECS:
        if plain.correct(ref, 1.0, field=spec).valid:
            return spec
    return None


def run(pp: PostProcessor, lines: Sequence[Line], fields: bool) -> list[Corrected]:
    """Post-process every line, as its ground-truth field type when ``fields``."""
    return [pp.correct(x.text, x.confidence, x.char_probs, field_of(x.ref) if fields else None) for x in lines]


def row(label: str, lines: Sequence[Line], hyps: Sequence[str]) -> str:
    """Table row: CER ci, CER ci without spaces, WER ci, lines better / worse than raw."""
    refs = [x.ref for x in lines]
    before = [char_edits(x.text, x.ref)[0] for x in lines]
    after = [char_edits(h, x.ref)[0] for h, x in zip(hyps, lines)]
    better = sum(a < b for a, b in zip(after, before))
    worse = sum(a > b for a, b in zip(after, before))
    return (f"| {label:<34} | {len(lines):>5} | {cer(hyps, refs):6.2%} | {cer(hyps, refs, ignore_spaces=True):6.2%}"
            f" | {wer(hyps, refs):6.2%} | {better:>6} | {worse:>5} |")


HEADER = ("| rules                              | lines | CER ci | CER ns | WER ci | better | worse |\n"
          "|------------------------------------|------:|-------:|-------:|-------:|-------:|------:|")


def rule_table(lines: Sequence[Line]) -> list[str]:
    """Rows: raw, each rule alone, the defaults, all rules; free text except the field rows."""
    fields = [x for x in lines if field_of(x.ref)]
    out = [HEADER, row("raw (no rules)", lines, [x.text for x in lines])]
    configs: list[tuple[str, dict, Sequence[Line], bool]] = [
        ("nfkc", {"enabled_rules": {"nfkc"}}, lines, False),
        ("whitespace", {"enabled_rules": {"whitespace"}}, lines, False),
        ("dictionary", {"enabled_rules": {"dictionary"}}, lines, False),
        ("dictionary, English words only", {"enabled_rules": {"dictionary"}, "lexicon": ()}, lines, False),
        ("dictionary, any edit position", {"enabled_rules": {"dictionary"}, "unsure_edits_only": False}, lines, False),
        ("dictionary, no protection", {"enabled_rules": {"dictionary"}, "unsure_edits_only": False,
                                       "protect_prob": 1.0}, lines, False),
        ("field lines: raw", None, fields, True),
        ("field lines: confusables", {"enabled_rules": {"confusables"}}, fields, True),
        ("all rules" + (" (= defaults)" if DEFAULT_RULES == RULES else ""), {"enabled_rules": RULES}, lines, True),
    ]
    if DEFAULT_RULES != RULES:
        configs.append(("defaults: " + "+".join(sorted(DEFAULT_RULES)), {}, lines, True))
    for label, kwargs, subset, as_fields in configs:
        if kwargs is None:
            hyps = [x.text for x in subset]
        else:
            hyps = [c.text for c in run(PostProcessor(**kwargs), subset, as_fields)]
        out.append(row(label, subset, hyps))
    return out


def flag_quality(wrong: Sequence[bool], flags: Sequence[bool]) -> tuple[float, float, int]:
    """(precision, recall, flagged count) of ``flags`` as a detector of ``wrong``."""
    hit = sum(f and w for f, w in zip(flags, wrong))
    n = sum(flags)
    return (hit / n if n else 0.0), (hit / sum(wrong) if any(wrong) else 0.0), n


def misread(lines: Sequence[Line]) -> list[bool]:
    """Per line: does the raw reading have CER > 0?"""
    return [char_edits(x.text, x.ref)[0] > 0 for x in lines]


def review_rows(lines: Sequence[Line], thresholds: Sequence[float]) -> list[str]:
    """needs_review (free text: confidence < threshold) precision/recall per threshold."""
    out = ["| review threshold | flagged | precision | recall |  F1   |", "|---:|---:|---:|---:|---:|"]
    for t in thresholds:
        p, r, n = flag_quality(misread(lines), [x.confidence < t for x in lines])
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        out.append(f"| {t:.2f} | {n} | {p:.1%} | {r:.1%} | {f1:.3f} |")
    return out


def field_validity(lines: Sequence[Line]) -> str:
    """How ``valid`` (defaults) separates wrong from right field readings."""
    fields = [x for x in lines if field_of(x.ref)]
    res = run(PostProcessor(), fields, True)
    wrong = [char_edits(c.text, x.ref)[0] > 0 for c, x in zip(res, fields)]
    invalid = [c.valid is False for c in res]
    p, r, n = flag_quality(wrong, invalid)
    return (f"field lines: {len(fields)}, still wrong after correction: {sum(wrong)}, flagged invalid: {n} "
            f"(precision {p:.0%}, recall {r:.0%} of the wrong ones)")


def sweep(lines: Sequence[Line]) -> list[str]:
    """Dictionary settings on ``lines`` (the tuning split): CER and better/worse per setting."""
    out = [HEADER]
    for unsure in (True, False):
        for protect in (0.8, 0.9, 0.95, 0.99):
            for min_len in (3, 4):
                for dist in (1, 2):
                    pp = PostProcessor(enabled_rules={"dictionary"}, protect_prob=protect, min_word_length=min_len,
                                       max_edit_distance=dist, unsure_edits_only=unsure)
                    label = f"unsure={unsure:d} p={protect} len>={min_len} d={dist}"
                    out.append(row(label, lines, [c.text for c in run(pp, lines, False)]))
    return out


def changes(lines: Sequence[Line], pp_factory: Callable[[], PostProcessor]) -> list[str]:
    """Every line the dictionary changed: raw -> corrected (ground truth), marked +/-/=."""
    out = []
    for x, c in zip(lines, run(pp_factory(), lines, False)):
        if c.text != x.text:
            d = char_edits(c.text, x.ref)[0] - char_edits(x.text, x.ref)[0]
            out.append(f"  {'+' if d < 0 else '-' if d > 0 else '='} {x.text!r} -> {c.text!r}   (truth {x.ref!r})")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="only the first N lines of lines.jsonl")
    parser.add_argument("--split", choices=("test", "tune", "all"), default="test")
    parser.add_argument("--charset", default="latin", help="ppocr charset (latin = shipped default, all)")
    parser.add_argument("--sweep", action="store_true", help="print the tuning sweeps (tuning split)")
    parser.add_argument("--show-changes", action="store_true", help="list the dictionary's changes")
    parser.add_argument("--refresh", action="store_true", help="re-recognise instead of using the cache")
    args = parser.parse_args()
    if not (DATA / "lines.jsonl").exists():
        print(f"skipped: {DATA} not found (the SROIE dev set lives in ../shared)")
        return 0
    lines = load_lines(args.limit, args.charset, args.refresh)
    report = split(lines, args.split)
    print(f"SROIE dev lines, ppocr charset={args.charset}, split={args.split}: {len(report)} lines "
          f"of {len(lines)} (tune = even receipt numbers, test = odd)\n")
    print("\n".join(rule_table(report)))
    default = PostProcessor()
    p, r, n = flag_quality(misread(report), [c.needs_review for c in run(default, report, False)])
    print(f"\nneeds_review at confidence < {default.review_threshold:g} (free text): flagged {n} lines, "
          f"precision {p:.1%}, recall {r:.1%} of the lines with CER > 0")
    print(field_validity(report))
    if args.show_changes:
        print("\ndictionary changes (+ better, - worse, = same CER):")
        print("\n".join(changes(report, lambda: PostProcessor(enabled_rules={"dictionary"}))))
    if args.sweep:
        tune = split(lines, "tune")
        print(f"\ntuning split ({len(tune)} lines): needs_review threshold")
        print("\n".join(review_rows(tune, (0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99))))
        print("\ntuning split: dictionary settings")
        print("\n".join(sweep(tune)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
