"""Model runtime: ONNX Runtime sessions (CPU or CUDA) and the model files shipped in the ``rapidocr`` wheel."""
