"""Adapting the recogniser to a user's documents (``ocrstream model synth|label-export|finetune|evaluate``).

* :mod:`.manifest`: labelled line manifests (JSONL ``{"id", "image", "text", ...}``, the format of
  ``../shared/data/sroie-dev/lines.jsonl``): read, write, export.
* :mod:`.synth`: synthetic labelled lines (fonts from Debian packages, text generators, degradations
  with albumentations).
* :mod:`.evaluate`: CER/WER of a recogniser on manifests.
* :mod:`.ppocr_torch`: the shipped PP-OCRv6 ONNX recogniser as a trainable PyTorch module and back.
* :mod:`.finetune`: CTC fine-tuning with checkpoints, a CPU time budget and the CER gate.
* :mod:`.trocr_finetune`: the same entry for a TrOCR checkpoint (transformers).

Not a pipeline stage: offline tools. Training needs the ``finetune`` extra
(``pip install 'ocrstream[finetune]'``); ``synth`` needs the ``synth`` extra.
"""
