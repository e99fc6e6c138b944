"""What a new input shape costs the detector on OpenVINO, with and without the CPU plugin's runtime cache.

``ocrstream/ocr/runtime/openvino_session.py`` turns the CPU plugin's per-shape runtime cache off
(``CPU_RUNTIME_CACHE_CAPACITY`` 0: it grew without bound over the soak's shapes). This measures
what that costs: one process per capacity (``--capacities``), in the order given (e.g. ABAB), each
timing ``LineDetector.probability_map`` (``time.process_time``, all threads, ms per page) on the
first ``--pages`` SROIE dev pages at full size (``max_side`` 1536, no glyph sizing), then the
same pages again (shapes seen), then ``--new-rounds`` rounds of new shapes (each page resized to a
detector input shape the process has not run, 32 px smaller per round), each followed by the
same resized pages again.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_det_shapes.py [--data DIR] [--pages 12]
        [--capacities 0,64,0,64] [--new-rounds 3]

With a cache, "new shapes k" costing more than "the same again k" is the per-shape cost, and
then capacity 0 pays it on every call: its "again" passes cost more than the cache's. Skipped cleanly (exit 0)
when ``../shared`` is absent or OpenVINO cannot run here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "sroie-dev"


def measure(data: Path, pages: int, capacity: int, new_rounds: int) -> dict[str, float]:
    """Mean CPU-ms per page of each pass, in this process, with the runtime cache at ``capacity``."""
    import cv2

    from ocrstream.ocr.runtime import openvino_session

    openvino_session.RUNTIME_CACHE_CAPACITY = capacity
    from ocrstream.ocr.detection import LineDetector, det_input

    detector = LineDetector(max_side=1536, glyph_px=None, device="cpu", backend="openvino-bf16")
    images = [cv2.imread(str(path)) for path in sorted((data / "pages" / "img").glob("*.jpg"))[:pages]]
    def shape(image) -> tuple[int, int]:
        """The detector's input shape ``(H, W)`` of ``image`` at 1536 px."""
        h, w = det_input(image, 1536).shape[2:]
        return h, w

    seen = {shape(image) for image in images}

    def timed(batch: list) -> float:
        costs = []
        for image in batch:
            start = time.process_time()
            detector.probability_map(image)
            costs.append(1000 * (time.process_time() - start))
        return statistics.mean(costs)

    def unseen(image, k: int):
        """``image`` resized to a detector input shape this process has not run yet, 32 k px smaller."""
        h, w = shape(image)
        h, w = h - 32 * k, w - 32 * k
        while (h, w) in seen and w > 64:  # bounded: at worst a seen shape at 64 px wide
            w -= 32
        seen.add((h, w))
        return cv2.resize(image, (w, h))

    passes = {"first calls": timed(images), "seen shapes": timed(images)}
    for k in range(1, new_rounds + 1):
        resized = [unseen(image, k) for image in images]
        passes[f"new shapes {k}"] = timed(resized)
        passes[f"the same again {k}"] = timed(resized)
    return passes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pages", type=int, default=12)
    parser.add_argument("--capacities", default="0,64,0,64", help="runtime cache capacities, one process each")
    parser.add_argument("--new-rounds", type=int, default=3)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.data, args.pages, args.child, args.new_rounds)))
        return 0
    if not (args.data / "pages" / "img").is_dir():
        print(f"skipped: {args.data} absent")
        return 0
    from ocrstream.ocr.runtime.openvino_session import cpu_has_bf16, openvino_available

    if not (openvino_available() and cpu_has_bf16()):
        print("skipped: OpenVINO bf16 cannot run on this CPU")
        return 0
    rows = []
    for capacity in (int(c) for c in args.capacities.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(capacity), "--data", str(args.data),
                              "--pages", str(args.pages), "--new-rounds", str(args.new_rounds)],
                             capture_output=True, text=True, check=True)
        rows.append((capacity, json.loads(out.stdout.strip().splitlines()[-1])))
    names = list(rows[0][1])
    print(f"{args.pages} dev pages, detector on OpenVINO bf16, 1536 px max side; mean CPU-ms per page")
    print("| runtime cache capacity | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for capacity, passes in rows:
        print(f"| {capacity} | " + " | ".join(f"{passes[n]:.0f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
