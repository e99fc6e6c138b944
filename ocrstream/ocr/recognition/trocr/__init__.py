"""TrOCR (VisionEncoderDecoder: ViT/BEiT/DeiT encoder + TrOCR decoder) text-line recogniser on ONNX Runtime.

Runtime needs neither torch nor transformers: onnxruntime sessions, the ``tokenizers``
library (``tokenizer.json``; extra ``ocrstream[trocr]``), Pillow (the resize only), OpenCV
and numpy. The model folder is written by
:func:`ocrstream.training.trocr_export.export_trocr` (``ocrstream model export-trocr``)
and holds ``manifest.json`` (file names, special token ids, shapes, sha256 of each ONNX
file), ``encoder_model.onnx``, ``decoder_model_merged.onnx`` (and/or the split pair
``decoder_model.onnx`` + ``decoder_with_past_model.onnx``), ``tokenizer.json`` (+
``tokenizer_config.json``), ``preprocessor_config.json`` and ``generation_config.json``.
The ONNX input/output names are optimum's (``pixel_values`` -> ``last_hidden_state``;
``input_ids``, ``encoder_hidden_states``, ``past_key_values.{i}.{decoder|encoder}.{key|value}``,
``use_cache_branch`` -> ``logits``, ``present.{i}.{decoder|encoder}.{key|value}``).

The runtime, one module per concept (per batch of at most ``max_batch_size`` crops):

* :mod:`.image` -- pre-processing, the checkpoint's ``ViTImageProcessor`` bit-exact
  (:class:`ImageProcessorSpec`, :func:`pil_resize`); the encoder then runs once per batch;
* :mod:`.decoder` -- the ONNX decoder with a KV cache, merged or split (:class:`KVCacheDecoder`);
* :mod:`.generation` -- greedy and beam search ported from transformers 4.57
  (:class:`GenerationSettings`, :func:`greedy_search`, :func:`beam_search`);
* :mod:`.tokenizer` -- token ids -> text as transformers' ``batch_decode`` (:class:`TokenDecoder`);
* :mod:`.recognizer` -- the model folder and :class:`TrOCRRecognizer` (the ``Recognizer``
  protocol: confidences, character positions); long lines are split and merged by the shared
  crop budget of :mod:`ocrstream.ocr.recognition.longlines`.
"""

from ocrstream.ocr.recognition.trocr.decoder import KVCacheDecoder
from ocrstream.ocr.recognition.trocr.generation import (
    DEFAULT_MAX_NEW_TOKENS,
    GenerationSettings,
    Hypothesis,
    beam_search,
    greedy_search,
)
from ocrstream.ocr.recognition.trocr.image import PIL_FILTERS, ImageProcessorSpec, pil_resize
from ocrstream.ocr.recognition.trocr.recognizer import (
    MANIFEST_NAME,
    MODEL_DIR_ENV,
    TrOCROutput,
    TrOCRRecognizer,
    resolve_model_dir,
)
from ocrstream.ocr.recognition.trocr.tokenizer import TokenDecoder

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "MANIFEST_NAME",
    "MODEL_DIR_ENV",
    "PIL_FILTERS",
    "GenerationSettings",
    "Hypothesis",
    "ImageProcessorSpec",
    "KVCacheDecoder",
    "TokenDecoder",
    "TrOCROutput",
    "TrOCRRecognizer",
    "beam_search",
    "greedy_search",
    "pil_resize",
    "resolve_model_dir",
]
