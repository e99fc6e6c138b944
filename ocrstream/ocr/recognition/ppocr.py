"""PP-OCRv6 (small) CTC text-line recogniser on ONNX Runtime.

Model: ``rapidocr/models/PP-OCRv6_rec_small.onnx`` from the installed ``rapidocr==3.10.0``
wheel (opened in place via ``importlib.resources``, never copied). Input ``x``:
``(N, 3, 48, W)`` float32; output ``(N, ceil(W / 8), 18710)`` softmax probabilities over
``["blank", *dictionary, " "]``. The dictionary (18708 symbols) is the ONNX
``metadata_props["character"]`` entry, one symbol per line, read as rapidocr's
``inference_engine/onnxruntime/main.py::get_character_list`` does; blank/space are added
by rapidocr's ``ch_ppocr_rec/utils.py::CTCLabelDecode.get_character`` (reused).

Pre-processing follows rapidocr ``ch_ppocr_rec/main.py::resize_norm_img`` (= PaddleOCR
``tools/infer/predict_rec.py``): height 48, BGR, ``(x / 255 - 0.5) / 0.5``. Measured
differences (SROIE dev lines, ``bench/bench_recognize.py``):

* **no padding beyond one CTC frame**: a crop is padded only up to the next multiple
  of 8 px and shares a batch only with crops of the same padded width. Right-padding
  to the batch's widest crop (PaddleOCR, and rapidocr's 320 px minimum) makes the model
  drop spaces (the network mixes the whole line, padding included), wastes CPU, and
  makes a crop's reading depend on its batch-mates (13 of 1500 dev lines changed
  between batch 1 and 32); bucketed, a crop reads the same alone or batched.
  ``batching="pad"`` keeps the PaddleOCR scheme for comparison.
* INTER_AREA when shrinking (anti-aliasing), INTER_LINEAR when enlarging.
* **space restoration** from the model's own space probability (see :func:`ctc_greedy`).
* the arg-max is restricted to a character set (default ``"latin"``), and the model's output
  layer is cut to that set's columns before the session is made (:mod:`.ctc_head`: same arg-max,
  probabilities renormalised over the set, 15-25 % less CPU per crop, a 59x smaller output).
* optional look-alike repair of 0/1 inside words and O inside numbers (:func:`fix_lookalikes`).

Bounds (:mod:`.longlines`, shared with every recogniser): crops with a side < 2 px read as
empty; crops wider than :data:`MAX_RATIO` heights (the widest SROIE dev line is 21) are read in
chunks of :data:`TARGET_RATIO` heights merged at their overlaps; readings are cut to
``max_chars``. A model call then gets at most ``max_batch_size`` crops and at most
``max_batch_bytes`` of input plus output tensors (the output alone is 18710 float32 per CTC
frame: 32 crops of aspect 40 would be 590 MB) and at most ``max_batch_columns`` (4096) crops x padded
width px, or a single crop: at most ``48 * MAX_RATIO`` px wide (every width is clamped to
:attr:`PPOCRRecognizer.max_input_width`), i.e. 19.1 MB. The columns bound the model's working
memory, which grows ~22 KiB per column (int8; measured: one call of 32 crops 1920 px wide took
1.4 GB, ``bench/bench_rec_memory.py``); :meth:`PPOCRRecognizer.warm_up` runs the largest calls
these bounds allow once at load, so ONNX Runtime's CPU arena, which keeps its high-water mark, is
at its ceiling before the first document (issue 24's soak), and the session keeps no memory plan
per input shape (``enable_mem_pattern`` off: 60 MiB lower ceiling, the same CPU per line).
Up to ``concurrent_calls`` model calls run at once
(:func:`ocrstream.ocr.runtime.onnx_session.resolve_concurrent_calls`, default 2), largest first, so
at most ``concurrent_calls * max_batch_bytes`` of tensors are alive; a page's lines are read in
about half the wall time on 2 idle cores, the same readings.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, NamedTuple, TypeVar

import cv2
import numpy as np
import onnx
from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode

from ocrstream.ocr.recognition.ctc_head import restrict_head
from ocrstream.ocr.recognition.int8 import Int8Unavailable, int8_model
from ocrstream.ocr.recognition.longlines import MAX_PITCH, CropBudget, as_bgr, read_within_budget
from ocrstream.ocr.recognition.recognizer import EMPTY_READING, LineReading
from ocrstream.ocr.runtime.models import rapidocr_model
from ocrstream.ocr.runtime.onnx_session import (
    Device,
    chosen_provider,
    make_session,
    resolve_backend,
    resolve_concurrent_calls,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["CHARSETS", "PPOCRRecognizer", "REC_MODEL", "ctc_greedy", "fix_lookalikes", "make_batch"]

REC_MODEL = "PP-OCRv6_rec_small.onnx"
#: crops go to the model this many times their aspect-ratio width (model input width and CTC frames,
#: hence CPU, scale with it); 1.0 = rapidocr's resize. Measured for issue 22 and not changed: see
#: :class:`PPOCRRecognizer` ``width_scale``.
WIDTH_SCALE = 1.0
#: model input height: rapidocr ``config.yaml`` ``Rec.rec_img_shape: [3, 48, 320]``.
REC_HEIGHT = 48
#: resized px per CTC timestep (the network downsamples width by 8: T = ceil(W / 8)).
FRAME_STRIDE = 8
#: normalisation, rapidocr ``ch_ppocr_rec/main.py::resize_norm_img``: (x/255 - 0.5) / 0.5.
NORM_MEAN, NORM_STD = 0.5, 0.5
#: p(space) peak in a blank gap above which a space is inserted (tuned on the dev lines,
#: ASCII charset, before look-alike repair: WER 8.3 / 8.0 / 8.3 % at 0.08 / 0.10 / 0.13).
SPACE_THRESHOLD = 0.1
_BLANK = 0
#: crops wider than MAX_RATIO heights are split into chunks of TARGET_RATIO heights (50 %
#: overlap): receipt lines (aspect <= ~30; SROIE dev max 21) are read whole, as before.
MAX_RATIO, TARGET_RATIO = 40.0, 30.0
#: input + output tensor bytes of one model call (a single crop may exceed it: <= 19.1 MB).
MAX_BATCH_BYTES = 64 * 1024**2
#: crops x padded width (px) of one model call: 32 crops of 128 px, or 2 of the widest (1920 px).
MAX_BATCH_COLUMNS = 4096

_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))
#: arg-max restrictions: printable ASCII; "latin" adds Latin-1 Supplement (minus the
#: multiplication/division signs: the model reads a printed "x" as U+00D7) + Latin
#: Extended-A + euro sign; "all" keeps the model's 18708 symbols (CJK etc.).
CHARSETS: dict[str, str | None] = {
    "ascii": _ASCII,
    "latin": _ASCII
    + "".join(chr(c) for c in range(0xA1, 0x180) if c not in (0xD7, 0xF7))
    + "\u20ac",
    "all": None,
}


def model_path() -> Path:
    """Path of the recognition model inside the installed rapidocr package."""
    return rapidocr_model(REC_MODEL)


class ResolvedModel(NamedTuple):
    """A recognition model to load.

    Attributes:
        path: its float ONNX file.
        version: the id readings carry (``PP-OCRv6_rec_small``, ``ppocr-ft-<sha256[:12]>``, a file's stem).
        int8: whether the int8 recipe may serve it (:mod:`.int8`): the shipped model, or a fine-tuned
            one whose manifest says its int8 model read within the margin (``int8.served``).
        base_sha256: the model it was fine-tuned from (manifest ``base.sha256``); None for the shipped one.
    """

    path: Path
    version: str
    int8: bool = False
    base_sha256: str | None = None


def _resolve_model(model: str | Path | None) -> ResolvedModel:
    """The model ``model`` names: None = shipped, an ``.onnx`` file (fp32 only), or a fine-tuned
    model's manifest / its folder (:mod:`.model_manifest`; sha256 checked)."""
    if model is None:
        return ResolvedModel(model_path(), Path(REC_MODEL).stem, int8=True)
    model = Path(model)
    if model.is_dir() or model.suffix == ".json":
        from ocrstream.ocr.recognition.model_manifest import int8_served, load_model_manifest

        tuned = load_model_manifest(model, kind="ppocr")
        return ResolvedModel(tuned.onnx_path, tuned.model_id, int8=int8_served(tuned.manifest.get("int8")),
                             base_sha256=(tuned.manifest.get("base") or {}).get("sha256"))
    return ResolvedModel(model, model.stem)


def label_table(character: str) -> list[str]:
    """CTC label table ``["blank", *dictionary, " "]`` of a ``character`` metadata value (one symbol a line)."""
    return CTCLabelDecode(character=character.splitlines()).character


def _restrict(table: list[str], charset: str) -> tuple[np.ndarray | None, list[str]]:
    """Output columns kept (blank, symbols of the charset, space) and their labels."""
    if charset not in CHARSETS:
        raise ValueError(f"unknown charset {charset!r}; known: {', '.join(CHARSETS)}")
    allowed = CHARSETS[charset]
    if allowed is None:
        return None, table
    keep = [0] + [i for i in range(1, len(table) - 1) if table[i] in allowed] + [len(table) - 1]
    return np.asarray(keep), [table[i] for i in keep]


def resized_width(h: int, w: int, scale: float = 1.0) -> int:
    """Width (px, >= 1) of an ``h x w`` crop resized to height 48 keeping its aspect ratio, times
    ``scale`` (the recogniser's ``width_scale``, :data:`WIDTH_SCALE`)."""
    return max(1, math.ceil(REC_HEIGHT * w * scale / max(h, 1)))


def _frames(width: int) -> int:
    """CTC timesteps of an input ``width`` px wide (the next multiple of 8, divided by 8)."""
    return -(-width // FRAME_STRIDE)


def _normalise(crop: np.ndarray, width: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 BGR -> ``(3, 48, width)`` float32 in [-1, 1]."""
    shrink = crop.shape[0] > REC_HEIGHT
    img = cv2.resize(
        crop, (width, REC_HEIGHT), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    img = img.astype(np.float32) * (1.0 / (255.0 * NORM_STD)) - NORM_MEAN / NORM_STD
    return img.transpose(2, 0, 1)


def make_batch(crops: Sequence[np.ndarray], widths: Sequence[int], step: int = FRAME_STRIDE) -> np.ndarray:
    """Model input ``(N, 3, 48, W)`` float32 for BGR crops resized to ``widths`` (px).

    ``W`` = the widest of ``widths`` rounded up to a multiple of ``step`` (8, a CTC frame); each crop is
    normalised by :func:`_normalise` and right-padded with 0 (mid grey after normalisation).
    Shared by inference and by fine-tuning (``ocrstream/training``) so both see the same pixels.
    """
    pad = -(-max(widths) // step) * step
    batch = np.zeros((len(crops), 3, REC_HEIGHT, pad), dtype=np.float32)
    for k, (crop, w) in enumerate(zip(crops, widths)):
        batch[k, :, :, :w] = _normalise(as_bgr(np.asarray(crop)), w)
    return batch


def ctc_greedy(
    probs: np.ndarray, *, space_index: int, space_threshold: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy (best-path) CTC decoding of one line, with optional space restoration.

    Args:
        probs: ``(T, C)`` softmax output of one line (valid timesteps only); label 0 is blank.
        space_index: column of the space symbol.
        space_threshold: where two consecutive non-space symbols are separated by blank
            timesteps in which p(space) peaks above this value, insert a space (the model
            saw one but blank won the arg-max); None disables it.

    Returns:
        ``(labels, probs, centres)`` per emitted symbol: repeats merged, blanks dropped;
        ``probs`` = highest probability over the merged timesteps (inserted space: its
        p(space) peak); ``centres`` = mean timestep index of the run (inserted space: the
        peak timestep), in frames (float).
    """
    labels = probs.argmax(axis=1)
    if labels.size == 0:
        return labels, np.zeros(0), np.zeros(0)
    best = np.take_along_axis(probs, labels[:, None], axis=1)[:, 0]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], labels.size]
    keep = labels[starts] != _BLANK
    run = (labels[starts][keep], np.maximum.reduceat(best, starts)[keep],
           ((starts + ends - 1) / 2.0)[keep])
    if space_threshold is None or run[0].size < 2:
        return run
    gaps = zip(ends[keep][:-1], starts[keep][1:])
    return _insert_spaces(*run, list(gaps), probs[:, space_index], space_index, space_threshold)


def _insert_spaces(labels: np.ndarray, probs: np.ndarray, centres: np.ndarray, gaps: list[tuple[int, int]],
                   p_space: np.ndarray, space_index: int, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Insert ``space_index`` into gap k (between symbols k and k+1) when its p(space) peak > threshold."""
    out_l, out_p, out_c = [labels[0]], [probs[0]], [centres[0]]
    for k, (lo, hi) in enumerate(gaps, start=1):
        if hi > lo and space_index not in (labels[k], labels[k - 1]):
            peak = lo + int(np.argmax(p_space[lo:hi]))
            if p_space[peak] > threshold:
                out_l.append(space_index)
                out_p.append(float(p_space[peak]))
                out_c.append(float(peak))
        out_l.append(labels[k])
        out_p.append(probs[k])
        out_c.append(centres[k])
    return np.asarray(out_l), np.asarray(out_p, dtype=np.float64), np.asarray(out_c, dtype=np.float64)


_TOKEN = re.compile(r"[A-Za-z0-9]+")
_ZERO_ONE = re.compile(r"[01]+")
_O_IN_NUMBER = re.compile(r"(?<=\d)[Oo]+(?=\d|$)")


def _letters_for(token: str, m: re.Match[str]) -> str:
    """Replace a 0/1 run inside a word by O/I (o/l next to lower case) when letters flank it."""
    before = token[m.start() - 1] if m.start() else ""
    after = token[m.end()] if m.end() < len(token) else ""
    inside = before.isalpha() and after.isalpha()
    word_end = not after and before.islower() and m.start() >= 2
    if not (inside or word_end):
        return m.group(0)
    lower = before.islower() or after.islower()
    return m.group(0).translate(str.maketrans("01", "ol" if lower else "OI"))


def _repair_token(m: re.Match[str]) -> str:
    token = _ZERO_ONE.sub(lambda d: _letters_for(m.group(0), d), m.group(0))
    return _O_IN_NUMBER.sub(lambda o: "0" * len(o.group(0)), token)


def fix_lookalikes(text: str) -> str:
    """Repair the model's commonest glyph confusions; same length as ``text``.

    Within each alphanumeric token: a run of 0/1 flanked by letters ("ST0RE",
    "Gril1Veg") or ending a word after >= 2 letters, the last lower case ("Leve1",
    "Ma11"), becomes O/I (o/l next to lower case); an O/o run after a digit and before
    a digit or the token end ("G3O") becomes 0. "RM10", "A1", "WD40" are left alone.
    Dev lines: 10 words fixed, none broken (WER 8.0 -> 7.7 %).
    """
    return _TOKEN.sub(_repair_token, text)


class PPOCRRecognizer:
    """PP-OCRv6 small CTC recogniser (model contract and measured choices: module docstring).

    Args:
        max_batch_size: crops per model call (default 32).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (``ocrstream.ocr.runtime.onnx_session``).
        threads: intra-op threads; None reads ``$OCRSTREAM_ORT_THREADS``.
        concurrent_calls: model calls run at once (each batch is one call); None reads
            ``$OCRSTREAM_ORT_CONCURRENT_CALLS`` (default 2).
        space_restoration: insert spaces the model saw but did not emit (:func:`ctc_greedy`).
        space_threshold: p(space) above which a space is inserted.
        charset: arg-max restriction, a key of :data:`CHARSETS` (``"all"`` = none).
        lookalikes: apply :func:`fix_lookalikes` to each reading.
        batching: ``"bucket"`` (batches of equal width rounded up to 8 px: <= 7 px of
            padding, readings independent of batch-mates) or ``"pad"`` (PaddleOCR:
            sorted by aspect ratio, right-padded to the widest of the batch).
        max_batch_width: ``"pad"`` only: crops wider than this (resized px) run alone.
        max_batch_bytes: input + output tensor bytes of one model call (a crop alone may exceed it).
        max_batch_columns: crops x padded width (px) of one model call (a crop alone may exceed it):
            the model's working memory grows with it, ~22 KiB per column in int8 (a call of 32 crops
            1920 px wide took 1.4 GB; ``bench/bench_rec_memory.py``).
        width_step: crops are bucketed and padded to a multiple of this many px (a multiple of 8,
            one CTC frame). Each new batch shape keeps ~7.5 KiB in ONNX Runtime (memory patterns
            off; 56 MiB at most for 32 x 240 shapes); 32 px halves the distinct shapes of the dev
            lines (200 -> 110) but changes 48 of 1500 readings (CER +0.04, WER +0.22 point), so 8.
        max_chars: characters kept per reading (``OCRSTREAM_MAX_REGION_CHARS``).
        max_ratio, target_ratio: long-line split (:mod:`.longlines`).
        model: alternative ``.onnx`` with the same contract, or a fine-tuned model's
            ``manifest.json`` (or its folder; sha256 verified, see ``model_manifest.py``).
        backend: inference backend (``ocrstream.ocr.runtime.onnx_session.BACKENDS``); None reads
            ``$OCRSTREAM_INFERENCE``; its default ``auto`` runs the recogniser on ONNX Runtime, in int8
            on the CPU (``onnxruntime-int8``: the shipped model, and a fine-tuned one whose manifest says
            its int8 model read within the margin, :mod:`.int8`; batch shapes vary too much for OpenVINO
            without its per-shape cache, ``resolve_backend``).
        cut_head: cut the model's output layer to ``charset``'s columns (:mod:`.ctc_head`); False
            computes every column and slices them (the same arg-max; for comparison).
        width_scale: crops are resized to this many times their aspect-ratio width (0.25..2). Measured
            2026-12-07 (int8, 1 thread; ``bench/bench_pages.py --width-scale``, ``bench/bench_fields.py``):
            0.9 reads the 60 dev pages at CER ci 3.07 % instead of 3.01 % (WER 13.25 % vs 12.73 %) for
            ~14 % less recognition CPU (246 vs 287 CPU-ms per page), 0.85 at 3.17 %, but 0.9 costs the
            receipt fields 2.5 points of F1 (dev 0.860 -> 0.835, kie 0.865 -> 0.843); 1.15 reads no
            better (3.01 %) for +27 % CPU. So 1.0; the parameter stays for such comparisons.

    Attributes:
        backend: the backend it runs on (``resolve_backend``; ``onnxruntime-int8`` runs a bare ``.onnx``
            file, and a fine-tuned model without ``int8.served`` in its manifest, in fp32).
        provider: the session's provider, ``-int8`` appended when the int8 model serves (metrics, events).
        output_columns: ``(K,)`` int, the columns of the whole dictionary's output the cut model
            emits (:mod:`.ctc_head`), or None when it emits them all.
        version: ``"PP-OCRv6_rec_small"`` for the shipped model, the manifest's ``id`` for a
            fine-tuned one, else the ONNX file's name (reported in metrics and events).

    Raises:
        ValueError: ``max_batch_size < 1``, unknown ``charset`` or ``batching``, ``width_scale``
            outside 0.25..2.
        ocrstream.ocr.runtime.onnx_session.DeviceUnavailableError: ``device="cuda"`` unavailable.
        ocrstream.ocr.recognition.model_manifest.ModelIntegrityError: a manifest whose model is
            missing or altered.
    """

    name = "ppocr"

    def __init__(
        self,
        *,
        max_batch_size: int = 32,
        device: Device = "auto",
        threads: int | None = None,
        concurrent_calls: int | None = None,
        space_restoration: bool = True,
        space_threshold: float = SPACE_THRESHOLD,
        charset: str = "latin",
        lookalikes: bool = True,
        batching: Literal["bucket", "pad"] = "bucket",
        max_batch_width: int = 1600,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        max_batch_columns: int = MAX_BATCH_COLUMNS,
        width_step: int = FRAME_STRIDE,
        max_chars: int = 1000,
        max_ratio: float = MAX_RATIO,
        target_ratio: float = TARGET_RATIO,
        model: str | Path | None = None,
        backend: str | None = None,
        cut_head: bool = True,
        width_scale: float = WIDTH_SCALE,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if batching not in ("bucket", "pad"):
            raise ValueError(f"batching must be 'bucket' or 'pad', got {batching!r}")
        self.max_batch_size = max_batch_size
        self.space_threshold = space_threshold if space_restoration else None
        self.batching = batching
        self.lookalikes = lookalikes
        self.max_batch_width = max_batch_width
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_columns = max_batch_columns
        if width_step < FRAME_STRIDE or width_step % FRAME_STRIDE:
            raise ValueError(f"width_step must be a positive multiple of {FRAME_STRIDE}, got {width_step}")
        self.width_step = width_step
        if not 0.25 <= width_scale <= 2.0:
            raise ValueError(f"width_scale must be within 0.25..2, got {width_scale}")
        self.width_scale = width_scale
        self.budget = CropBudget(max_ratio=max_ratio, target_ratio=target_ratio, max_chars=max_chars)
        resolved = _resolve_model(model)
        onnx_path, self.version = resolved.path, resolved.version
        self.backend = resolve_backend(device, backend, shapes_vary=True)
        int8 = self.backend == "onnxruntime-int8" and resolved.int8
        if int8:
            try:
                onnx_path = int8_model(onnx_path, base_sha256=resolved.base_sha256)
            except (Int8Unavailable, OSError) as exc:
                log.warning("recogniser in fp32: no int8 model (%s)", exc)
                int8 = False
        proto = onnx.load(str(onnx_path))
        meta = {p.key: p.value for p in proto.metadata_props}
        if "character" not in meta:
            raise KeyError(f"recognition model {onnx_path.name} has no 'character' metadata_props entry")
        table = label_table(meta["character"])
        self._columns, self._chars = _restrict(table, charset)
        source: Path | bytes = onnx_path
        self.output_columns: np.ndarray | None = None
        if cut_head and self._columns is not None and restrict_head(proto, self._columns):
            source, self.output_columns = proto.SerializeToString(), self._columns
            self._columns = None  # the model emits the kept columns only
        self.concurrent_calls = resolve_concurrent_calls(concurrent_calls)
        self._session = make_session(source, device=device, threads=threads, backend=self.backend,
                                     calls=self.concurrent_calls, mem_pattern=False)
        self._calls = (ThreadPoolExecutor(self.concurrent_calls, thread_name_prefix="ppocr-call")
                       if self.concurrent_calls > 1 else None)
        self._input = self._session.get_inputs()[0].name
        self._frame_bytes = (len(table) if self._columns is not None else len(self._chars)) * 4  # one output frame
        self.provider = chosen_provider(self._session) + ("-int8" if int8 else "")

    # -- batching -------------------------------------------------------------
    def _batches(self, widths: Sequence[int]) -> list[list[int]]:
        """Index groups by ascending width: equal frame counts ("bucket") or consecutive ("pad"),
        each within ``max_batch_size``, ``max_batch_bytes`` and ``max_batch_columns`` (or one crop)."""
        order = sorted(range(len(widths)), key=widths.__getitem__)
        key: Callable[[int], int]
        if self.batching == "bucket":
            key = lambda i: self.padded(widths[i])  # noqa: E731
        else:  # consecutive in aspect order; over-wide crops alone
            key = lambda i: i if widths[i] > self.max_batch_width else -1  # noqa: E731
        groups: dict[int, list[int]] = {}
        for i in order:
            groups.setdefault(key(i), []).append(i)
        batches: list[list[int]] = []
        for group in groups.values():
            batch: list[int] = []
            for i in group:  # ascending width: the newest crop is the batch's widest
                if batch and not self._fits(len(batch) + 1, widths[i]):
                    batches.append(batch)
                    batch = []
                batch.append(i)
            batches.append(batch)
        return batches

    @property
    def max_input_width(self) -> int:
        """Widest model input, px (a multiple of 8): ``48 x`` the widest piece the crop budget passes
        (``max_ratio``, or ``max_chars * MAX_PITCH`` heights when that is less), rounded up to a CTC
        frame. :meth:`_read` clamps every crop to it (a chunk of a split crop may be a pixel over)."""
        ratio = min(self.budget.max_ratio, self.budget.max_chars * MAX_PITCH)
        return self.padded(math.ceil(REC_HEIGHT * ratio))

    def padded(self, width: int) -> int:
        """The model input width of a crop ``width`` px wide: the next multiple of ``width_step``."""
        return -(-width // self.width_step) * self.width_step

    def _fits(self, n: int, width: int) -> bool:
        """Whether one model call may hold ``n`` crops padded to ``width`` px (one crop always may)."""
        return n <= 1 or (n <= self.max_batch_size and n * self.padded(width) <= self.max_batch_columns
                          and self.batch_bytes(width, n) <= self.max_batch_bytes)

    def largest_batches(self) -> list[tuple[int, int]]:
        """The ``(crops, width px)`` model calls whose working memory is the largest, one per
        width where it peaks: a call's activations grow with crops x width (~22 KiB per column,
        ``bench/bench_rec_memory.py``), its output with the same, so every call allowed by
        :meth:`_fits` and :attr:`max_input_width` needs no more than the one of these with at
        least its columns. The widest call is among them."""
        best: dict[int, tuple[int, int]] = {}
        for width in range(FRAME_STRIDE, self.max_input_width + 1, FRAME_STRIDE):
            n = 1
            while self._fits(n + 1, width):
                n += 1
            best[n * width] = (n, width)  # ascending widths: the widest of equal columns wins
        most = best[max(best)]
        widest = max(best.values(), key=lambda nw: nw[1])
        return [most] if most == widest else [most, widest]

    def warm_up(self) -> None:
        """Bring the session's memory to its ceiling now: run :meth:`largest_batches`, as many at once
        as ``concurrent_calls``, twice (with ONNX Runtime's memory patterns on, a shape's plan is one
        block from its second run; the session runs with them off, :func:`make_session`). ONNX
        Runtime's CPU arena keeps what it once reached; reached here, before the first document,
        later batches of any shape fit in it (issue 24: recognize's PSS rose +27 % in the soak as
        larger batches first came). Measured (``bench/bench_rec_memory.py``, one run, stage-like
        calls, medians of 2): PSS +40 % after the warm-up calls before, +1.7 % now, the same
        readings and CPU per line (6.50 / 6.46 ms). Costs ~0.9 CPU-s once, at load."""
        calls = [shape for shape in self.largest_batches() for _ in range(self.concurrent_calls)]

        def run(shape: tuple[int, int]) -> None:
            self.forward(np.zeros((shape[0], 3, REC_HEIGHT, shape[1]), np.float32))

        for _ in range(2):
            self._map(run, calls)

    def _map(self, call: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``call`` on every item, up to ``concurrent_calls`` at once (the session runs concurrent
        calls as they come); results in the items' order."""
        if self._calls is not None and len(items) > 1:
            return list(self._calls.map(call, items))
        return [call(item) for item in items]

    def batch_bytes(self, width: int, n: int) -> int:
        """Input + output tensor bytes of a model call on ``n`` crops padded to ``width`` px."""
        frames = self.padded(width) // FRAME_STRIDE
        return n * (3 * REC_HEIGHT * frames * FRAME_STRIDE * 4 + frames * self._frame_bytes)

    def _run(self, crops: Sequence[np.ndarray], widths: Sequence[int]) -> np.ndarray:
        """Model output ``(N, T, C)`` for crops resized to ``widths`` (:func:`make_batch`)."""
        return self.forward(make_batch(crops, widths, self.width_step))

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Model call: ``(N, 3, 48, W)`` float32 -> ``(N, ceil(W / 8), C)`` softmax probabilities;
        ``C`` is the charset's columns (blank, symbols, space) when the output layer was cut to them
        (:mod:`.ctc_head`), else the whole dictionary's (``charset="all"``: 18710)."""
        probs: np.ndarray = self._session.run(None, {self._input: batch})[0]
        return probs

    # -- decoding -------------------------------------------------------------
    def _decode(self, probs: np.ndarray, input_w: int, crop_w: int) -> LineReading:
        """``probs`` (T, C) of one line -> reading; x in crop px (frame centre * 8 / scale)."""
        probs = probs[: _frames(input_w)]
        if self._columns is not None:
            probs = probs[:, self._columns]
        labels, char_probs, centres = ctc_greedy(
            probs, space_index=len(self._chars) - 1, space_threshold=self.space_threshold
        )
        if labels.size == 0:
            return EMPTY_READING
        text = "".join(self._chars[i] for i in labels)
        if self.lookalikes:
            text = fix_lookalikes(text)
        xs = np.minimum((centres + 0.5) * FRAME_STRIDE, input_w) * (crop_w / input_w)
        return LineReading.from_chars(text, char_probs.tolist(), xs.tolist())

    def recognize(self, crops: Sequence[np.ndarray]) -> list[LineReading]:
        """Read line crops ``(H, W, 3)`` uint8 BGR (grey and BGRA accepted); input order kept.

        Within the crop budget (:mod:`.longlines`): crops with a side < 2 px read as empty text,
        long ones are read in chunks, readings are cut to ``max_chars``.

        Raises:
            ValueError: a crop is not image-shaped.
        """
        return read_within_budget(crops, self._read, self.budget)

    def _read(self, images: Sequence[np.ndarray]) -> list[LineReading]:
        """Readings of non-empty ``(h, w, 3)`` uint8 BGR crops, batched (:meth:`_batches`); up to
        ``concurrent_calls`` batches at once, the costliest (crops x width) first."""
        widths = [min(resized_width(img.shape[0], img.shape[1], self.width_scale), self.max_input_width) for img in images]
        out: list[LineReading] = [EMPTY_READING] * len(images)

        def read_batch(idx: list[int]) -> list[LineReading]:
            probs = self._run([images[i] for i in idx], [widths[i] for i in idx])
            return [self._decode(probs[k], widths[i], images[i].shape[1]) for k, i in enumerate(idx)]

        batches = sorted(self._batches(widths), key=lambda idx: -len(idx) * widths[idx[-1]])
        for idx, batch_readings in zip(batches, self._map(read_batch, batches)):
            for i, reading in zip(idx, batch_readings):
                out[i] = reading
        return out
