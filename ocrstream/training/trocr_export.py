"""Export a TrOCR / VisionEncoderDecoder checkpoint folder to the ONNX layout of :mod:`ocrstream.ocr.recognition.trocr`.

    ocrstream model export-trocr SRC OUT [--quantize]      # once wired in ocrstream/cli/main.py
    python -m ocrstream.training.trocr_export SRC OUT [--quantize] [--opset 18] [--keep-split]

Needs the ``export`` extra (``pip install -e '.[export]'``: torch, transformers<4.58,
optimum-onnx). SRC must be a local folder (``config.json`` + weights + processor files as
``save_pretrained`` writes them): nothing is downloaded.

How: optimum-onnx's ``main_export(task="image-to-text-with-past")`` -- it traces the
encoder, the first decoder step (no past) and the decoder with past (KV cache), and merges
the two decoders into ``decoder_model_merged.onnx`` (one set of weights, an ``If`` on
``use_cache_branch``). Chosen over hand-written ``torch.onnx`` wrappers because optimum
already handles transformers' cache classes, dynamic axes and the input/output names the
runtime (and other ONNX consumers such as ``ORTModelForVision2Seq``) expect; its cost is
the pin ``transformers<4.58`` in the ``export`` extra. The merged decoder is kept and the
split pair deleted (unless ``keep_split``), halving the decoder's disk and RAM. Its
with-past branch returns placeholder ``present.*.encoder.*`` tensors: the runtime keeps the
cross-attention KV of the first step.

Then: the tokenizer is saved as ``tokenizer.json`` (converted by transformers when the
checkpoint only has slow-tokenizer files) and checked to decode like transformers'
``batch_decode(skip_special_tokens=True)`` through the ``tokenizers`` library; optional
int8 dynamic quantisation (``onnxruntime.quantization.quantize_dynamic``, QInt8 weights,
subgraphs of the merged decoder included) whose cost is measured on rendered text lines
against the fp32 export (greedy token agreement, exact-match share and CER of the int8 text
w.r.t. the fp32 text) and stored in the manifest; ``manifest.json`` (format
``ocrstream-trocr/1``) with the opset, input size, vocabulary size, special token ids,
decoder_start_token_id, source, tool versions and the sha256 of every ONNX file; finally a
smoke run of the exported folder with :class:`~ocrstream.ocr.recognition.trocr.TrOCRRecognizer`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein

from ocrstream.ocr.recognition.model_manifest import sha256_file

__all__ = [
    "DEFAULT_OPSET", "ExportError", "export_trocr", "main", "make_tiny_trocr", "quantization_check", "render_lines",
]

#: optimum-onnx 0.1.0's recommended minimum opset for vision-encoder-decoder.
DEFAULT_OPSET = 18
FORMAT = "ocrstream-trocr/1"
TASK = "image-to-text-with-past"
ONNX_FILES = {
    "encoder": "encoder_model.onnx",
    "decoder_merged": "decoder_model_merged.onnx",
    "decoder": "decoder_model.onnx",
    "decoder_with_past": "decoder_with_past_model.onnx",
}
#: text drawn for the int8-vs-fp32 check and the smoke run (receipt-like lines).
CHECK_LINES = [
    "TOTAL INCL. GST 25.50", "CASH 50.00", "CHANGE 24.50", "TAX INVOICE", "INVOICE NO: CS 104522",
    "DATE: 21/11/2026 14:03", "MILK 1L 2 X 6.90 13.80", "THANK YOU PLEASE COME AGAIN",
    "Dear customer,", "Questions? Call 03-7781 2200.", "Haemoglobin 13.9 g/dL", "Patient ID: 88231-X",
    "Kind regards", "WHOLEMEAL BREAD 1 X 4.50", "No 12 Jalan Meranti", "Glucose (fasting) 5.1 mmol/L",
]


class ExportError(RuntimeError):
    """The checkpoint cannot be exported (wrong kind, missing files, failed self-check)."""


def _say(msg: str, t0: float | None = None) -> None:
    suffix = f" ({time.process_time() - t0:.1f} CPU-s)" if t0 is not None else ""
    print(f"[export-trocr] {msg}{suffix}", file=sys.stderr, flush=True)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def render_lines(lines: Sequence[str], size: int = 28) -> list[np.ndarray]:
    """Each text drawn black on white with Pillow's bundled TrueType font -> ``(H, W, 3)`` uint8 BGR."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    out = []
    for text in lines:
        x0, y0, x1, y1 = font.getbbox(text)
        img = Image.new("RGB", (int(x1 + 16), int(y1 + 16)), "white")
        ImageDraw.Draw(img).text((8, 8), text, font=font, fill="black")
        out.append(np.ascontiguousarray(np.asarray(img)[:, :, ::-1]))
    return out


def quantization_check(fp32_dir: str | os.PathLike[str], int8_dir: str | os.PathLike[str],
                       images: Sequence[np.ndarray] | None = None, *, num_beams: int = 1,
                       max_new_tokens: int = 32) -> dict[str, Any]:
    """Compare an int8 export with its fp32 source on the same images (greedy by default).

    Returns:
        ``{"lines", "token_agreement", "exact_match", "cer_vs_fp32", "num_beams", "max_new_tokens"}``:
        ``token_agreement`` = equal tokens at equal positions / tokens of the longer sequence,
        summed over lines; ``exact_match`` = share of lines with identical token sequences;
        ``cer_vs_fp32`` = character edits of the int8 text / characters of the fp32 text.
    """
    from ocrstream.ocr.recognition.trocr import TrOCRRecognizer

    images = list(images) if images is not None else render_lines(CHECK_LINES)
    settings = dict(num_beams=num_beams, max_new_tokens=max_new_tokens)
    ref = TrOCRRecognizer(fp32_dir, device="cpu", split_long_lines=False).generate(images, **settings)
    got = TrOCRRecognizer(int8_dir, device="cpu", split_long_lines=False).generate(images, **settings)
    same = total = exact = edits = chars = 0
    for r, g in zip(ref, got):
        same += sum(a == b for a, b in zip(r.token_ids, g.token_ids))
        total += max(len(r.token_ids), len(g.token_ids))
        exact += r.token_ids == g.token_ids
        edits += Levenshtein.distance(g.text, r.text)
        chars += len(r.text)
    return {
        "lines": len(images), "num_beams": num_beams, "max_new_tokens": max_new_tokens,
        "token_agreement": same / max(total, 1), "exact_match": exact / max(len(images), 1),
        "cer_vs_fp32": edits / max(chars, 1),
    }


def make_tiny_trocr(dst: str | os.PathLike[str], *, seed: int = 0, height: int = 32, width: int = 128) -> Path:
    """Save a tiny randomly initialised TrOCR checkpoint (model + processor) to ``dst``, for tests and benchmarks.

    ViT encoder and TrOCR decoder of width 32 with 2 layers each (~70k parameters), input
    ``height x width`` (patches of 8 px), a byte-level BPE tokenizer (vocabulary 320) trained
    on :data:`CHECK_LINES`; special ids ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2 = decoder start.
    Weights are drawn with std 0.5 (the default 0.02 gives the same output for every image),
    and the EOS row of the tied output projection is set near the row of the most frequent
    greedy token, so that lines end at different lengths, some by EOS, some by the length
    limit. Nothing is downloaded.

    Returns:
        ``dst`` as a Path.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from PIL import Image
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        TrOCRConfig,
        TrOCRProcessor,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    torch.manual_seed(seed)
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CHECK_LINES * 5, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", pad_token="<pad>",
                                        eos_token="</s>", unk_token="<unk>")
    enc = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    image_size=(height, width), patch_size=8, initializer_range=0.5)
    dec = TrOCRConfig(vocab_size=len(tokenizer), d_model=32, decoder_layers=2, decoder_attention_heads=2,
                      decoder_ffn_dim=64, max_position_embeddings=128, init_std=0.5,
                      bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 2, 1, 2
    model = VisionEncoderDecoderModel(cfg).eval()
    processor = TrOCRProcessor(
        image_processor=ViTImageProcessor(size={"height": height, "width": width}, resample=Image.Resampling.BILINEAR,
                                          image_mean=[0.5] * 3, image_std=[0.5] * 3),
        tokenizer=tokenizer)
    pil = [Image.fromarray(np.ascontiguousarray(i[:, :, ::-1])) for i in render_lines(CHECK_LINES)]
    with torch.no_grad():
        first = model.generate(processor(images=pil, return_tensors="pt").pixel_values, max_new_tokens=20)
        dominant = int(torch.mode(first[:, 1:].flatten()).values)
        w = model.decoder.output_projection.weight
        noise = torch.randn(w.shape[1], generator=torch.Generator().manual_seed(seed + 1))
        w[2] = 0.95 * w[dominant] + 0.1 * noise
    dst = Path(dst)
    model.save_pretrained(dst)
    processor.save_pretrained(dst)
    return dst


def _check_source(src: Path) -> dict[str, Any]:
    if not src.is_dir():
        raise ExportError(f"SRC {src} is not a local checkpoint folder (nothing is downloaded)")
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise ExportError(f"{cfg_path} missing: SRC must be a save_pretrained() folder")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("model_type") != "vision-encoder-decoder":
        raise ExportError(f"{src}: model_type {cfg.get('model_type')!r}, expected 'vision-encoder-decoder' (TrOCR)")
    if not any((src / n).is_file() for n in ("preprocessor_config.json",)):
        raise ExportError(f"{src}: preprocessor_config.json missing (save the TrOCRProcessor with the model)")
    return cfg


def _check_tokenizer(src: Path, out: Path) -> None:
    """Write tokenizer.json if absent and check ``tokenizers`` decoding equals transformers'."""
    from transformers import AutoTokenizer

    from ocrstream.ocr.recognition.trocr import TokenDecoder

    hf = AutoTokenizer.from_pretrained(str(src), use_fast=True)
    if not (out / "tokenizer.json").is_file():
        hf.save_pretrained(str(out))
    if not (out / "tokenizer.json").is_file():
        raise ExportError("transformers could not produce tokenizer.json for this tokenizer")
    ours = TokenDecoder(out)
    rng = np.random.default_rng(0)
    seqs = [hf(t)["input_ids"] for t in CHECK_LINES]
    seqs += [rng.integers(0, len(hf), size=n).tolist() for n in (1, 5, 12, 30)]
    for ids in seqs:
        want = hf.batch_decode([ids], skip_special_tokens=True)[0]
        if ours.decode(ids) != want:
            raise ExportError(f"tokenizers decode {ours.decode(ids)!r} != transformers {want!r} for {ids}")


def _past_branch_reads_states(merged: Path) -> bool:
    import onnx

    def walk(graph):
        for node in graph.node:
            yield node
            for attr in node.attribute:
                if attr.g is not None and len(attr.g.node):
                    yield from walk(attr.g)

    model = onnx.load(str(merged), load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "If":
            for attr in node.attribute:
                if attr.name == "then_branch":
                    return any("encoder_hidden_states" in n.input for n in walk(attr.g))
    return True


def _quantize(src_dir: Path, dst_dir: Path, files: dict[str, str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for key, name in files.items():
        t0 = time.process_time()
        path = src_dir / name
        big = sum(p.stat().st_size for p in src_dir.glob(name + "*")) > 1_800_000_000
        quantize_dynamic(str(path), str(dst_dir / name), weight_type=QuantType.QInt8,
                         use_external_data_format=big, extra_options={"EnableSubgraph": True})
        _say(f"  int8 {name}: {path.stat().st_size / 1e6:.1f} MB -> {(dst_dir / name).stat().st_size / 1e6:.1f} MB", t0)


def _write_manifest(out: Path, base: dict[str, Any], files: dict[str, str], quantized: bool,
                    quantization: dict[str, Any] | None) -> dict[str, Any]:
    entries = {}
    for key, name in files.items():
        path = out / name
        entry = {"path": name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
        data = [p.name for p in sorted(out.glob(name + "_data*")) + sorted(out.glob(name + ".data*"))]
        if data:
            entry["external_data"] = {d: sha256_file(out / d) for d in data}
        entries[key] = entry
    manifest = {**base, "quantized": quantized, "quantization": quantization, "files": entries,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def export_trocr(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    quantize: bool = False,
    opset: int = DEFAULT_OPSET,
    keep_split: bool = False,
    validate: bool = False,
    overwrite: bool = False,
    check_images: Sequence[np.ndarray] | None = None,
    smoke_test: bool = True,
) -> dict[str, Any]:
    """Export the checkpoint folder ``src`` into ``out`` (see the module docstring); prints progress to stderr.

    Args:
        src: local ``save_pretrained`` folder of a VisionEncoderDecoder (TrOCR) model + processor.
        out: output folder (created; must be empty unless ``overwrite``).
        quantize: write int8 dynamically quantised ONNX files instead of fp32; the
            agreement with fp32 is measured and stored under ``manifest["quantization"]``.
        opset: ONNX opset (default 18).
        keep_split: also keep ``decoder_model.onnx`` + ``decoder_with_past_model.onnx``.
        validate: run optimum's own output validation against PyTorch (slow for big models).
        overwrite: replace an existing non-empty ``out``.
        check_images: ``(H, W, 3)`` uint8 BGR lines for the int8 check (default: rendered
            :data:`CHECK_LINES`).
        smoke_test: load the result with ``TrOCRRecognizer`` and read one line.

    Returns:
        The manifest written to ``out/manifest.json``.

    Raises:
        ExportError: not a local VisionEncoderDecoder folder, several EOS ids, failed tokenizer check.
        FileExistsError: ``out`` is not empty and ``overwrite`` is False.
        ImportError: the ``export`` extra is not installed.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    t_all = time.process_time()
    cfg = _check_source(src)
    _clear_output(out, overwrite)
    main_export, generation_config = _export_tools()

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-trocr-", dir=out.parent))
    try:
        fp32 = work / "fp32"
        files = _export_onnx(main_export, src, fp32, opset=opset, validate=validate, keep_split=keep_split)
        _step("[2/5] tokenizer.json + decoding check against transformers ...", "[2/5] tokenizer ok",
              _check_tokenizer, src, fp32)
        base = _base_manifest(src, cfg, fp32, generation_config.from_pretrained(str(fp32)), files, opset)
        _step("[3/5] hashing + manifest ...", "[3/5] fp32 manifest written",
              _write_manifest, fp32, base, files, False, None)
        final, quantization = fp32, None
        if quantize:
            final, quantization = _quantized_copy(fp32, work / "int8", base, files, check_images)
        else:
            _say("[4/5] quantisation skipped")
        manifest = _write_manifest(final, base, files, quantize, quantization)
        if out.exists():
            out.rmdir()
        shutil.move(str(final), str(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if smoke_test:
        _smoke_run(out)
    _say(f"done: {out} ({', '.join(manifest['files'])}; quantized={quantize})", t_all)
    return manifest


def _step(start: str, done: str, fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` between two progress lines (the second with the CPU time spent)."""
    t0 = time.process_time()
    _say(start)
    result = fn(*args)
    _say(done, t0)
    return result


def _clear_output(out: Path, overwrite: bool) -> None:
    """Make sure ``out`` is absent or empty (removing it when ``overwrite``); FileExistsError otherwise."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty (use overwrite=True / --overwrite)")
        shutil.rmtree(out)


def _export_tools() -> tuple[Any, Any]:
    """``(optimum's main_export, transformers.GenerationConfig)``; ImportError naming the extra when absent."""
    try:
        from optimum.exporters.onnx import main_export
        from transformers import GenerationConfig
    except ImportError as exc:
        raise ImportError(f"{exc}; install the export extra: pip install -e '.[export]'") from exc
    return main_export, GenerationConfig


def _export_onnx(main_export: Any, src: Path, fp32: Path, *, opset: int, validate: bool,
                 keep_split: bool) -> dict[str, str]:
    """optimum's export of ``src`` into ``fp32``; the split decoder pair dropped unless ``keep_split``.

    Returns:
        The ONNX files present, ``{key of ONNX_FILES: file name}``.
    """
    t0 = time.process_time()
    _say(f"[1/5] exporting {src} with optimum-onnx (task {TASK}, opset {opset}) ...")
    main_export(str(src), output=str(fp32), task=TASK, opset=opset, device="cpu",
                do_validation=validate, local_files_only=True)
    _say("[1/5] encoder, decoder, decoder-with-past and merged decoder written", t0)
    if not keep_split:
        for key in ("decoder", "decoder_with_past"):
            for p in fp32.glob(ONNX_FILES[key] + "*"):
                p.unlink()
    return {k: v for k, v in ONNX_FILES.items() if (fp32 / v).is_file()}


def _special_ids(gen: Any, cfg: dict[str, Any]) -> tuple[int, int]:
    """``(eos_token_id, decoder_start_token_id)`` from the generation config, else ``config.json``.

    Raises:
        ExportError: several EOS ids, or no decoder start token.
    """
    eos = gen.eos_token_id if gen.eos_token_id is not None else cfg["decoder"].get("eos_token_id")
    if isinstance(eos, list):
        if len(eos) != 1:
            raise ExportError(f"several EOS ids {eos} are not supported")
        eos = eos[0]
    start = gen.decoder_start_token_id
    if start is None:
        start = cfg.get("decoder_start_token_id", cfg["decoder"].get("decoder_start_token_id"))
    if start is None:
        raise ExportError("no decoder_start_token_id in generation_config.json / config.json")
    return int(eos), int(start)


def _base_manifest(src: Path, cfg: dict[str, Any], fp32: Path, gen: Any, files: dict[str, str],
                   opset: int) -> dict[str, Any]:
    """The manifest entries shared by the fp32 and int8 exports (everything but files and quantisation)."""
    from ocrstream.ocr.recognition.trocr import ImageProcessorSpec

    eos, start = _special_ids(gen, cfg)
    spec = ImageProcessorSpec.from_dict(json.loads((fp32 / "preprocessor_config.json").read_text()))
    dec = cfg["decoder"]
    return {
        "format": FORMAT,
        "source": {"path": str(src), "name_or_path": cfg.get("_name_or_path") or None,
                   "config_sha256": sha256_file(src / "config.json")},
        "exporter": {"tool": "optimum-onnx", "task": TASK, **{k: _version(k) for k in (
            "optimum-onnx", "optimum", "transformers", "torch", "onnx", "onnxruntime")}},
        "opset": opset,
        "input": {"height": spec.height, "width": spec.width, "channels": 3, "resample": spec.resample},
        "vocab_size": int(dec["vocab_size"]),
        "special_tokens": {
            "bos_token_id": gen.bos_token_id if gen.bos_token_id is not None else dec.get("bos_token_id"),
            "eos_token_id": eos,
            "pad_token_id": gen.pad_token_id if gen.pad_token_id is not None else dec.get("pad_token_id"),
        },
        "decoder_start_token_id": start,
        "decoder_layers": dec.get("decoder_layers"),
        "decoder_attention_heads": dec.get("decoder_attention_heads"),
        "max_position_embeddings": dec.get("max_position_embeddings"),
        "merged_past_branch_reads_encoder_states": (
            _past_branch_reads_states(fp32 / files["decoder_merged"]) if "decoder_merged" in files else True),
    }


def _quantized_copy(fp32: Path, int8: Path, base: dict[str, Any], files: dict[str, str],
                    check_images: Sequence[np.ndarray] | None) -> tuple[Path, dict[str, Any]]:
    """int8 copy of the ``fp32`` export in ``int8``, measured against it (:func:`quantization_check`).

    Returns:
        ``(int8, manifest["quantization"] entry)``.
    """
    t0 = time.process_time()
    _say("[4/5] int8 dynamic quantisation ...")
    shutil.copytree(fp32, int8, ignore=shutil.ignore_patterns("*.onnx", "*.onnx_data", "*.onnx.data"))
    _quantize(fp32, int8, files)
    _write_manifest(int8, base, files, True, None)
    _say("[4/5] measuring int8 vs fp32 on rendered lines (greedy) ...")
    check = quantization_check(fp32, int8, check_images)
    quantization = {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                    "subgraphs": True, "check_vs_fp32": check}
    _say(f"[4/5] int8: token agreement {check['token_agreement']:.1%}, exact lines "
         f"{check['exact_match']:.1%}, CER vs fp32 {check['cer_vs_fp32']:.2%} on {check['lines']} lines", t0)
    return int8, quantization


def _smoke_run(out: Path) -> None:
    """Load the exported folder with ``TrOCRRecognizer`` and read one rendered line (printed)."""
    from ocrstream.ocr.recognition.trocr import TrOCRRecognizer

    t0 = time.process_time()
    rec = TrOCRRecognizer(out, device="cpu", split_long_lines=False)
    reading = rec.recognize(render_lines(CHECK_LINES[:1]))[0]
    _say(f"[5/5] smoke run on {rec.provider}: {CHECK_LINES[0]!r} -> {reading.text!r} "
         f"(conf {reading.confidence:.2f})", t0)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``SRC OUT [--quantize] [--opset N] [--keep-split] [--validate] [--overwrite]``; returns 0."""
    p = argparse.ArgumentParser(prog="ocrstream model export-trocr", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="local TrOCR checkpoint folder (save_pretrained of model + processor)")
    p.add_argument("out", help="output folder for the ONNX model")
    p.add_argument("--quantize", action="store_true", help="int8 dynamic quantisation (accuracy cost measured)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--keep-split", action="store_true", help="also keep decoder_model + decoder_with_past_model")
    p.add_argument("--validate", action="store_true", help="optimum's own ONNX-vs-PyTorch validation")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    export_trocr(args.src, args.out, quantize=args.quantize, opset=args.opset, keep_split=args.keep_split,
                 validate=args.validate, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
