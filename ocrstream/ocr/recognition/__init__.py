"""Line recognition: the :class:`~.recognizer.Recognizer` protocol, its registry, PP-OCR (CTC) and TrOCR."""
