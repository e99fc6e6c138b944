"""Fine-tuning a TrOCR checkpoint: ``ocrstream model finetune --base trocr --trocr-checkpoint DIR ...``.

The same entry, data and gate as the PP-OCR path (:mod:`.finetune`) for a transformers
``VisionEncoderDecoderModel`` checkpoint folder (nothing is downloaded; the tests use the tiny
random model of :func:`ocrstream.training.trocr_export.make_tiny_trocr`). A plain PyTorch loop
(the model's own cross-entropy loss on ``labels``, AdamW, gradient norm clipped at 1, CPU time
budget) rather than ``Seq2SeqTrainer``: that one needs ``accelerate`` and brings nothing a
CPU run of a few hundred steps uses. Validation = greedy ``generate`` text scored with
:mod:`ocrstream.ocr.evaluation` (CER ci), base vs tuned; the gate refuses a worse model unless
``force``. Written: ``OUT/checkpoint/`` (``save_pretrained``), ``OUT/onnx/`` (exported with
:func:`ocrstream.training.trocr_export.export_trocr`, servable with ``OCRSTREAM_RECOGNIZER=trocr``)
and ``OUT/finetune.json`` (base, data, settings, measured CER).
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ocrstream.ocr.recognition.model_manifest import sha256_file
from ocrstream.training.evaluate import score_texts
from ocrstream.training.finetune import GateRefused
from ocrstream.training.manifest import LineSample, load_image, read_manifest

__all__ = ["finetune_trocr"]


def _pixels(processor, samples: Sequence[LineSample]) -> torch.Tensor:
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(load_image(s)[:, :, ::-1])) for s in samples]
    return processor(images=images, return_tensors="pt").pixel_values


def _labels(tokenizer, samples: Sequence[LineSample], max_tokens: int) -> torch.Tensor:
    ids = tokenizer([" ".join(s.text.split()) for s in samples], padding=True, truncation=True,
                    max_length=max_tokens, return_tensors="pt").input_ids
    return ids.masked_fill(ids == tokenizer.pad_token_id, -100)


def _read(model, processor, samples: Sequence[LineSample], max_tokens: int, batch: int = 16) -> list[str]:
    texts: list[str] = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(samples), batch):
            ids = model.generate(_pixels(processor, samples[i:i + batch]), max_new_tokens=max_tokens)
            texts += processor.batch_decode(ids, skip_special_tokens=True)
    return texts


def finetune_trocr(checkpoint: str | Path, train: Sequence[str], val: str, out: str | Path, *, lr: float = 5e-5,
                   batch_size: int = 8, threads: int = 1, budget_cpu_s: float = 3600.0, max_steps: int | None = None,
                   max_tokens: int = 32, seed: int = 0, force: bool = False, export: bool = True) -> dict:
    """Fine-tune ``checkpoint`` on ``train`` manifests, gate on ``val``; returns the summary dict.

    Stops after ``budget_cpu_s`` CPU seconds or ``max_steps`` optimiser steps.

    Raises:
        GateRefused: tuned val CER ci worse than the base's and not ``force`` (nothing written).
        ocrstream.training.manifest.ManifestError: unreadable manifest or image.
    """
    from transformers import TrOCRProcessor, VisionEncoderDecoderModel

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = VisionEncoderDecoderModel.from_pretrained(checkpoint)
    processor = TrOCRProcessor.from_pretrained(checkpoint)
    # transformers' stubs lack it: ProcessorMixin sets its attributes (tokenizer, image_processor) dynamically
    tokenizer = processor.tokenizer  # type: ignore[attr-defined]
    samples = [s for m in train for s in read_manifest(m)]
    val_samples = read_manifest(val)
    refs = [s.text for s in val_samples]
    base = score_texts(f"val:{Path(val).name}", _read(model, processor, val_samples, max_tokens), refs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    t0, step, losses = time.process_time(), 0, []
    while True:
        order = samples[:]
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            chunk = order[i:i + batch_size]
            model.train()
            loss = model(pixel_values=_pixels(processor, chunk), labels=_labels(tokenizer, chunk, max_tokens)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            print(f"[finetune-trocr] step {step} loss {losses[-1]:.3f} cpu {time.process_time() - t0:.0f}s",
                  file=sys.stderr, flush=True)
            if time.process_time() - t0 >= budget_cpu_s or (max_steps and step >= max_steps):
                break
        else:
            continue
        break
    cpu_s = time.process_time() - t0
    tuned = score_texts(f"val:{Path(val).name}", _read(model, processor, val_samples, max_tokens), refs)
    summary = {"kind": "trocr", "base": {"checkpoint": str(Path(checkpoint).resolve()),
                                         "weights_sha256": _weights_sha(Path(checkpoint))},
               "data": {"train": [str(Path(m).resolve()) for m in train], "val": str(Path(val).resolve()),
                        "train_lines": len(samples)},
               "settings": {"lr": lr, "batch_size": batch_size, "threads": threads, "budget_cpu_s": budget_cpu_s,
                            "max_steps": max_steps, "max_tokens": max_tokens, "seed": seed},
               "training": {"steps": step, "cpu_s": round(cpu_s, 1), "loss_first": losses[0], "loss_last": losses[-1]},
               "metrics": {"val_base": base.as_dict(), "val_tuned": tuned.as_dict(),
                           "gate_forced": tuned.cer_ci > base.cer_ci},
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if tuned.cer_ci > base.cer_ci and not force:
        raise GateRefused(f"fine-tuned val CER ci {tuned.cer_ci:.4f} is worse than the base's {base.cer_ci:.4f}: "
                          "no model written (--force writes it anyway)", base, tuned)
    out = Path(out)
    model.eval().save_pretrained(out / "checkpoint")
    processor.save_pretrained(out / "checkpoint")
    if export:
        from ocrstream.training.trocr_export import export_trocr

        export_trocr(out / "checkpoint", out / "onnx", overwrite=True)
        summary["onnx"] = str(out / "onnx")
    (out / "finetune.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _weights_sha(checkpoint: Path) -> str | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (checkpoint / name).is_file():
            return sha256_file(checkpoint / name)
    return None
