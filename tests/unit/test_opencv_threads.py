"""OpenCV's thread pool in the OCR processes (issue 22: 5 % less CPU per page at 1 thread)."""

from __future__ import annotations

import cv2
import pytest

from ocrstream.ocr.runtime.opencv_threads import limit_opencv_threads


@pytest.fixture(autouse=True)
def _restore_opencv_threads():
    before = cv2.getNumThreads()
    yield
    cv2.setNumThreads(before)


def test_limit_sets_the_count_and_zero_restores_opencv_s_default():
    limit_opencv_threads(1)
    assert cv2.getNumThreads() == 1
    limit_opencv_threads(0)
    assert cv2.getNumThreads() == cv2.getNumberOfCPUs()
    with pytest.raises(ValueError, match=">= 0"):
        limit_opencv_threads(-1)


def test_the_pipeline_built_from_settings_applies_the_setting():
    from ocrstream.ocr.predictor import OCRPipeline
    from ocrstream.settings import Settings

    limit_opencv_threads(0)
    OCRPipeline.from_settings(Settings(opencv_threads=1), recognizer=object(), detector=object())
    assert cv2.getNumThreads() == 1
