"""CTC fine-tuning of the shipped PP-OCRv6 recogniser: ``ocrstream model finetune --base ppocr ...``.

Pipeline: the rapidocr ONNX model -> PyTorch (:mod:`.ppocr_torch`) -> CTC training on the
``--train`` manifests -> the best state (validation CER ci on up to ``val_limit`` lines, measured
every ``eval_every`` steps) -> ONNX (softmax and ``character`` metadata restored) checked against
the PyTorch module -> base and fine-tuned ONNX models scored on the whole ``--val`` manifest exactly
as the recognize stage serves them -> **gate**: the model is written only if its validation CER ci
is not worse than the base's (``force`` overrides) -> **int8**: the shipped model's int8 recipe applied
to the fine-tuned one and scored on the same set (:func:`int8_check`; served in int8 when within 0.1
point CER ci of the float model) -> ``OUT/model.onnx`` + ``OUT/manifest.json`` (format of
:mod:`ocrstream.ocr.recognition.model_manifest`; the int8 verdict in ``int8``).

Training choices (CPU first):

* Model: :func:`ocrstream.training.ppocr_torch.convert`; export writes the trained weights back into
  the shipped graph (:func:`~ocrstream.training.ppocr_torch.write_back`).
* Pre-processing = the served one (:func:`ocrstream.ocr.recognition.ppocr.make_batch`): height 48, aspect
  kept, right-padded to a multiple of 8. Batches hold lines of similar width (sorted by width,
  chunked, chunk order shuffled) so padding stays small, as at inference.
* Loss: ``torch.nn.CTCLoss`` (blank 0, ``zero_infinity``) over the model's own label table
  (``["blank", *dictionary, " "]``); a label with a symbol outside the table is skipped (counted).
* Caseless labels (``"case": "upper"`` in a manifest, or ``--train-caseless``; SROIE transcribes
  mixed-case print in capitals): the loss folds case — p(A) + p(a) for the label's A — so the model
  is not taught to print capitals where the paper has lower case.
* Batch-norm statistics stay frozen (module in eval mode: batches of 8 give poor statistics);
  ``freeze="backbone"`` (default) trains only the SVTR neck and CTC head (:func:`backbone_parameters`),
  ``"none"`` trains everything.
* AdamW, linear warm-up then constant learning rate; gradient norm clipped at 5.
* Budget: stops after ``budget_cpu_s`` CPU seconds of this process (training and validation) or
  ``max_steps``; ``torch.set_num_threads(threads)`` (default 1).
* Kept state (``keep``): ``"best"`` = lowest validation-subset CER ci seen (the base weights
  included, so a run that never improves exports the base), ``"last"`` = the final weights.
* Checkpoint ``OUT/checkpoints/last.pt`` every ``checkpoint_every`` steps and at the end (weights,
  optimiser, step, CPU used, best state, RNG); ``resume=True`` continues from it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ocrstream.ocr.recognition.int8 import INT8_CER_MARGIN, Int8Unavailable, int8_model, recipe_key
from ocrstream.ocr.recognition.model_manifest import FORMAT, MANIFEST_NAME, load_model_manifest, sha256_file
from ocrstream.ocr.recognition.ppocr import PPOCRRecognizer, make_batch, model_path, resized_width
from ocrstream.training.evaluate import SetScore, score
from ocrstream.training.manifest import LineSample, load_image, read_manifest
from ocrstream.training.ppocr_torch import (
    ConversionError,
    OnnxModule,
    TorchPPOCR,
    convert,
    load_base,
    parity,
    write_back,
)

__all__ = ["FinetuneConfig", "FinetuneResult", "GateRefused", "Trainer", "backbone_parameters", "ctc_targets",
           "finetune_ppocr", "int8_check"]

MAX_WIDTH = 1600  # px after resizing to height 48 (bounded work per line); wider lines skipped


class GateRefused(RuntimeError):
    """The fine-tuned model is worse than the base on the validation set (nothing written)."""

    def __init__(self, message: str, base: SetScore, tuned: SetScore) -> None:
        super().__init__(message)
        self.base, self.tuned = base, tuned


@dataclass
class FinetuneConfig:
    """Settings of a fine-tuning run (all stored in the model manifest).

    Units: ``lr`` per step, ``budget_cpu_s`` CPU seconds of this process, widths in px.
    """

    train: list[str]
    val: str
    out: str
    train_caseless: list[str] = field(default_factory=list)
    freeze: str = "backbone"  # backbone | none
    lr: float = 1e-4
    batch_size: int = 8
    threads: int = 1
    budget_cpu_s: float = 3600.0
    max_steps: int | None = None
    warmup_steps: int = 50
    eval_every: int = 100
    val_limit: int = 200
    checkpoint_every: int = 100
    seed: int = 0
    keep: str = "best"  # best (lowest val-subset CER ci seen, the base included) | last
    force: bool = False
    resume: bool = False
    progress: bool = True


@dataclass
class FinetuneResult:
    """Outcome: the manifest written (None when the gate refused), scores, CPU seconds, losses."""

    manifest: Path | None
    base: SetScore
    tuned: SetScore
    train_cpu_s: float
    steps: int
    loss_first: float
    loss_last: float
    export_max_abs_diff: float
    int8: dict[str, Any] | None = None


def int8_check(onnx_path: Path, samples: Sequence[LineSample], tuned: SetScore, *, base_sha256: str, threads: int,
               cache_dir: Path) -> dict[str, Any]:
    """Whether the int8 recipe may serve the fine-tuned model ``onnx_path`` (the manifest's ``int8`` entry).

    Its int8 model (:func:`ocrstream.ocr.recognition.int8.int8_model`: the shipped model's activation
    ranges and float nodes, which fit a model fine-tuned from it exactly in the frozen backbone) reads
    the validation ``samples`` as the recognize stage would serve it; it may serve when its CER ci is at
    most :data:`~ocrstream.ocr.recognition.int8.INT8_CER_MARGIN` above the float model's (``tuned``).
    ``base_sha256`` is the model it was tuned from (the manifest's ``base.sha256``).

    Returns:
        ``{"recipe", "val", "margin", "served"}`` (``val``: :meth:`SetScore.as_dict`), or
        ``{"served": False, "reason"}`` when the recipe does not apply (a base other than the shipped model).
    """
    try:
        quantised = int8_model(onnx_path, cache_dir, base_sha256=base_sha256)
    except Int8Unavailable as exc:
        return {"served": False, "reason": str(exc)}
    reader = PPOCRRecognizer(model=quantised, device="cpu", threads=threads, backend="onnxruntime")
    measured, _ = score(reader, samples, tuned.name)
    return {"recipe": recipe_key(), "val": measured.as_dict(), "margin": INT8_CER_MARGIN,
            "served": measured.cer_ci <= tuned.cer_ci + INT8_CER_MARGIN}


def backbone_parameters(module: OnnxModule) -> set[str]:
    """Names of the parameters of the convolutional backbone of the converted model.

    PP-OCRv6's rec backbone (PPLCNetV3, PaddleOCR ``ppocr/modeling/backbones/rec_lcnetv3.py``) ends
    with the graph's only ``AveragePool`` (``avg_pool2d(x, [3, 2])``); the SVTR neck and the CTC head
    come after it. Backbone = parameters consumed by nodes up to that pool, in graph order.

    Raises:
        ConversionError: the graph has no AveragePool.
    """
    cut = module.node_index("AveragePool")
    if cut < 0:
        raise ConversionError("no AveragePool: cannot tell the backbone from the neck")
    return {key for key, name in module.names.items() if min(module.consumers.get(name, [cut + 1])) <= cut}


def ctc_targets(text: str, index: dict[str, int], *, caseless: bool) -> list[int] | None:
    """Label indices of ``text`` (whitespace runs -> one space); None if a symbol is not in the table.

    Caseless labels are upper-cased first (the loss then folds case, see :func:`_log_probs`).
    """
    text = " ".join(text.split())
    if caseless:
        text = text.upper()
    ids = [index.get(ch) for ch in text]
    return None if not ids or any(i is None for i in ids) else ids  # type: ignore[return-value]


def _case_pairs(table: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns ``(upper, lower)`` of letters whose both cases are single symbols of the table."""
    index = {ch: i for i, ch in enumerate(table)}
    pairs = [(i, index[ch.lower()]) for i, ch in enumerate(table)
             if len(ch) == 1 and ch.isupper() and len(ch.lower()) == 1 and ch.lower() in index]
    upper, lower = zip(*pairs)
    return torch.tensor(upper), torch.tensor(lower)


def _log_probs(logits: torch.Tensor, caseless: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``(T, N, C)`` log-probabilities; for caseless samples column A holds log(p(A) + p(a))."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    if caseless.any():
        upper, lower = pairs
        folded = logp.clone()
        folded[..., upper] = torch.logaddexp(logp[..., upper], logp[..., lower])
        logp = torch.where(caseless[:, None, None], folded, logp)
    return logp.transpose(0, 1)


@dataclass
class _Line:
    sample: LineSample
    width: int
    target: list[int]


def _prepare(samples: Sequence[LineSample], index: dict[str, int]) -> tuple[list[_Line], dict[str, int]]:
    """Lines with resized width and targets; counts of lines skipped by reason."""
    lines, skipped = [], {"unknown symbol": 0, "too wide": 0, "too short for label": 0}
    for s in samples:
        target = ctc_targets(s.text, index, caseless=s.caseless)
        if target is None:
            skipped["unknown symbol"] += 1
            continue
        h, w = load_image(s).shape[:2]
        width = resized_width(h, w)
        if width > MAX_WIDTH:
            skipped["too wide"] += 1
        elif -(-width // 8) < len(target):  # CTC needs at least one frame per label symbol
            skipped["too short for label"] += 1
        else:
            lines.append(_Line(s, width, target))
    return lines, skipped


def _batches(lines: Sequence[_Line], size: int, rng: random.Random) -> list[list[_Line]]:
    """Width-sorted chunks of ``size`` (little padding), in shuffled order."""
    order = sorted(lines, key=lambda line: (line.width, rng.random()))
    chunks = [order[i:i + size] for i in range(0, len(order), size)]
    rng.shuffle(chunks)
    return chunks


def _int8_summary(entry: dict[str, Any], tuned: SetScore) -> str:
    """One line on a manifest's ``int8`` entry (:func:`int8_check`)."""
    if "val" not in entry:
        return f"not served ({entry.get('reason', 'recipe does not apply')})"
    verdict = "served in int8" if entry["served"] else f"fp32 only (over the {100 * entry['margin']:.1f}-point margin)"
    return (f"validation CER ci {100 * entry['val']['cer_ci']:.2f} % against the float model's "
            f"{100 * tuned.cer_ci:.2f} %, {entry['val']['cpu_s']:.1f} against {tuned.cpu_s:.1f} CPU-s: {verdict}")


def _say(msg: str) -> None:
    print(f"[finetune] {msg}", file=sys.stderr, flush=True)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("torch", "onnx", "onnxruntime", "rapidocr"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


class Trainer:
    """State of one run (module, optimiser, data, counters); see :func:`finetune_ppocr`."""

    def __init__(self, cfg: FinetuneConfig) -> None:
        self.cfg = cfg
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.rng = random.Random(cfg.seed)
        self.base_model, self.table = load_base()
        self.module = convert(self.base_model).eval()
        index = {ch: i for i, ch in enumerate(self.table) if i > 0}
        self.pairs = _case_pairs(self.table)
        samples = [s for m in cfg.train for s in read_manifest(m)]
        samples += [s for m in cfg.train_caseless for s in read_manifest(m, caseless=True)]
        self.lines, self.skipped = _prepare(samples, index)
        if not self.lines:
            raise ValueError(f"no usable training lines (skipped: {self.skipped})")
        self.val = read_manifest(cfg.val)
        self.val_subset = random.Random(cfg.seed).sample(self.val, min(cfg.val_limit, len(self.val)))
        frozen = backbone_parameters(self.module) if cfg.freeze == "backbone" else set()
        if cfg.freeze not in ("backbone", "none"):
            raise ValueError(f"freeze must be 'backbone' or 'none', got {cfg.freeze!r}")
        if cfg.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {cfg.keep!r}")
        for name, p in self.module.named_parameters():
            p.requires_grad_(name not in frozen)
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)
        self.ctc = torch.nn.CTCLoss(blank=0, reduction="mean", zero_infinity=True)
        self.reader = TorchPPOCR(self.module)
        self.step, self.cpu_used = 0, 0.0
        self.losses: list[float] = []
        self.best_cer = float("inf")
        self.best_state: dict[str, torch.Tensor] | None = None
        self.val_history: list[tuple[int, float]] = []
        self.ckpt = Path(cfg.out) / "checkpoints" / "last.pt"

    # -- checkpoints --------------------------------------------------------------------------
    def save(self) -> None:
        """Atomic checkpoint write (temp file + rename)."""
        self.ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save({"step": self.step, "cpu_used": self.cpu_used, "losses": self.losses,
                    "model": self.module.state_dict(), "opt": self.opt.state_dict(),
                    "best_cer": self.best_cer, "best_state": self.best_state, "val_history": self.val_history,
                    "rng": self.rng.getstate(), "torch_rng": torch.get_rng_state(),
                    "config": asdict(self.cfg)}, tmp)
        os.replace(tmp, self.ckpt)

    def load(self) -> None:
        """Restore the last checkpoint (``resume``)."""
        state = torch.load(self.ckpt, weights_only=False)
        self.module.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.cpu_used, self.losses = state["step"], state["cpu_used"], state["losses"]
        self.best_cer, self.best_state, self.val_history = state["best_cer"], state["best_state"], state["val_history"]
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        _say(f"resumed at step {self.step} ({self.cpu_used:.0f} CPU-s used, best val CER ci {self.best_cer:.4f})")

    # -- loop ---------------------------------------------------------------------------------
    def _loss(self, batch: Sequence[_Line]) -> torch.Tensor:
        """Mean CTC loss per line of ``batch`` (``CTCLoss(reduction="mean")``: each line's loss / its label length)."""
        x = torch.from_numpy(make_batch([load_image(line.sample) for line in batch], [line.width for line in batch]))
        caseless = torch.tensor([line.sample.caseless for line in batch])
        logp = _log_probs(self.module(x), caseless, self.pairs)
        frames = torch.tensor([-(-line.width // 8) for line in batch])
        targets = torch.tensor([i for line in batch for i in line.target])
        lengths = torch.tensor([len(line.target) for line in batch])
        return self.ctc(logp, targets, frames, lengths)

    def mean_loss(self) -> float:
        """Mean loss over every training line with the current weights (no gradient)."""
        with torch.no_grad():
            batches = _batches(self.lines, self.cfg.batch_size, random.Random(0))
            return sum(float(self._loss(b)) * len(b) for b in batches) / len(self.lines)

    def train_step(self, batch: Sequence[_Line]) -> float:
        """One optimiser step on ``batch``; returns the loss (mean CTC per line, nats)."""
        loss = self._loss(batch)
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.lr * min(1.0, (self.step + 1) / max(1, self.cfg.warmup_steps))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 5.0)
        self.opt.step()
        self.step += 1
        return float(loss.detach())

    def validate(self) -> float:
        """CER ci on the validation subset with the current weights; keeps the best state."""
        result, _ = score(self.reader, self.val_subset, "val-subset")
        self.val_history.append((self.step, result.cer_ci))
        if result.cer_ci < self.best_cer:
            self.best_cer = result.cer_ci
            self.best_state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        return result.cer_ci

    def run(self) -> None:
        """Train until the CPU budget or ``max_steps``; validation and checkpoints on schedule."""
        from tqdm import tqdm

        cfg = self.cfg
        if self.best_state is None:
            base_cer = self.validate()
            _say(f"base val-subset CER ci {base_cer:.4f} on {len(self.val_subset)} lines")
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not cfg.progress, file=sys.stderr,
                   unit="step", dynamic_ncols=True)
        start = time.process_time() - self.cpu_used
        ema = None
        done = False
        while not done:
            for batch in _batches(self.lines, cfg.batch_size, self.rng):
                loss = self.train_step(batch)
                self.losses.append(loss)
                ema = loss if ema is None else 0.95 * ema + 0.05 * loss
                if self.step % cfg.eval_every == 0:
                    self.validate()
                if self.step % cfg.checkpoint_every == 0:
                    self.cpu_used = time.process_time() - start
                    self.save()
                self.cpu_used = time.process_time() - start
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.3f}", val_cer=f"{self.val_history[-1][1]:.4f}",
                                best=f"{self.best_cer:.4f}", cpu_s=f"{self.cpu_used:.0f}")
                if self.cpu_used >= cfg.budget_cpu_s or (cfg.max_steps and self.step >= cfg.max_steps):
                    done = True
                    break
        bar.close()
        if self.val_history[-1][0] != self.step:
            self.validate()
        self.cpu_used = time.process_time() - start
        self.save()


def finetune_ppocr(cfg: FinetuneConfig) -> FinetuneResult:
    """Run a fine-tuning (see module docstring); writes ``cfg.out/model.onnx`` + ``manifest.json``.

    Raises:
        GateRefused: the fine-tuned model's val CER ci is worse than the base's and not ``cfg.force``
            (checkpoints stay in ``cfg.out/checkpoints``; no model or manifest is written).
        ValueError: no usable training line, bad ``freeze``.
        ocrstream.training.manifest.ManifestError: unreadable manifest or image.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg)
    _say(f"{len(trainer.lines)} training lines (skipped {trainer.skipped}), {len(trainer.val)} validation lines; "
         f"{sum(p.numel() for p in trainer.params):,} of {sum(p.numel() for p in trainer.module.parameters()):,} "
         f"parameters trained (freeze={cfg.freeze}), {cfg.threads} thread(s), budget {cfg.budget_cpu_s:.0f} CPU-s")
    if cfg.resume and trainer.ckpt.is_file():
        trainer.load()
    trainer.run()
    if cfg.keep == "best":
        assert trainer.best_state is not None  # run() validates first: the base state at the least
        trainer.module.load_state_dict(trainer.best_state)
    _say(f"trained {trainer.step} steps in {trainer.cpu_used:.0f} CPU-s; val-subset CER ci {trainer.val_history}; "
         f"keeping the {cfg.keep} state")

    staging = out / ".staging"
    staging.mkdir(exist_ok=True)
    onnx_path = write_back(trainer.module, trainer.base_model, staging / "model.onnx")
    tuned_reader = PPOCRRecognizer(model=onnx_path, device="cpu", threads=cfg.threads)
    check_crops = [load_image(s) for s in trainer.val_subset[:16]]
    export = parity(check_crops, tuned_reader.forward, trainer.reader.forward,  # both over the served columns
                    tuned_reader, trainer.reader)
    _say(f"export check on {len(check_crops)} lines: max |prob diff| {export.max_abs_diff:.2e}, "
         f"same arg-max {100 * export.same_argmax:.2f} %, same text {export.same_text}")
    if not export.same_text:
        raise RuntimeError(f"exported ONNX reads differently from the PyTorch module: {export.texts}")

    base_reader = PPOCRRecognizer(device="cpu", threads=cfg.threads)
    base, _ = score(base_reader, trainer.val, f"val:{Path(cfg.val).name}")
    tuned, _ = score(tuned_reader, trainer.val, f"val:{Path(cfg.val).name}")
    _say(f"validation ({len(trainer.val)} lines) CER ci base {base.cer_ci:.4f} -> tuned {tuned.cer_ci:.4f}; "
         f"WER ci {base.wer_ci:.4f} -> {tuned.wer_ci:.4f}")
    result = FinetuneResult(None, base, tuned, trainer.cpu_used, trainer.step,
                            float(np.mean(trainer.losses[:20])), float(np.mean(trainer.losses[-20:])),
                            export.max_abs_diff)
    if tuned.cer_ci > base.cer_ci and not cfg.force:
        shutil.rmtree(staging)
        raise GateRefused(f"fine-tuned val CER ci {tuned.cer_ci:.4f} is worse than the base's {base.cer_ci:.4f}: "
                          f"no model written (--force writes it anyway)", base, tuned)
    base_sha256 = sha256_file(model_path())
    result.int8 = int8_check(onnx_path, trainer.val, tuned, base_sha256=base_sha256, threads=cfg.threads,
                             cache_dir=staging / "int8")
    _say(f"int8: {_int8_summary(result.int8, tuned)}")
    sha = sha256_file(onnx_path)
    manifest = {
        "format": FORMAT, "kind": "ppocr", "model": "model.onnx", "sha256": sha, "id": f"ppocr-ft-{sha[:12]}",
        "base": {"name": model_path().name, "sha256": base_sha256},
        "data": {"train": [{"manifest": str(Path(m).resolve()), "sha256": sha256_file(m)} for m in cfg.train],
                 "train_caseless": [{"manifest": str(Path(m).resolve()), "sha256": sha256_file(m)}
                                    for m in cfg.train_caseless],
                 "val": {"manifest": str(Path(cfg.val).resolve()), "sha256": sha256_file(cfg.val)},
                 "train_lines": len(trainer.lines), "skipped": trainer.skipped},
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("train", "val", "out", "train_caseless",
                                                                        "progress")},
        "training": {"steps": trainer.step, "cpu_s": round(trainer.cpu_used, 1), "loss_first20": result.loss_first,
                     "loss_last20": result.loss_last, "val_subset_cer_ci": trainer.val_history},
        "metrics": {"val_base": base.as_dict(), "val_tuned": tuned.as_dict(),
                    "export_max_abs_prob_diff": export.max_abs_diff, "gate_forced": tuned.cer_ci > base.cer_ci},
        "int8": result.int8,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tools": _versions(),
    }
    os.replace(onnx_path, out / "model.onnx")
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    shutil.rmtree(staging)
    load_model_manifest(out, kind="ppocr")  # self-check: what we wrote loads
    result.manifest = out / MANIFEST_NAME
    return result
