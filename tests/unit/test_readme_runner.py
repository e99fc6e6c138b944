"""The README runner's extraction and directives (tests/readme_runner.py), and the rule that every
block of README.md and docs/*.md either runs or says why not (tests/test_readme.py runs them)."""

from __future__ import annotations

import pytest

from tests.readme_runner import REPO, all_blocks, extract_blocks, parse_directives, same_output

DOC = """# Title

```bash
echo hi
```

```
hi
```

Some text.

<!-- readme-runner: skip reason=needs Docker (it says so) -->
```bash
docker run x
```

* a list item:
  <!-- readme-runner: allow-exit=1:submit,3 -->
  <!-- readme-runner: expect=done -->
  ```python
  print("done")
  ```

Text between.

```
a diagram, not an output: text came between
```
"""


def test_blocks_their_output_and_directives():
    blocks = extract_blocks("X.md", DOC)
    assert [(b.line, b.lang) for b in blocks] == [(3, "bash"), (14, "bash"), (21, "python"), (27, "")]
    echo, docker, py, diagram = blocks
    assert (echo.code, echo.output, echo.skip_reason) == ("echo hi\n", "hi\n", None)
    assert docker.skip_reason == "skipped: needs Docker (it says so)" and docker.output is None
    assert py.code == 'print("done")\n' and py.directives["expect"] == ["done"]
    assert py.allows(1, "ocrstream submit x") and not py.allows(1, "ocrstream search x") and py.allows(3, "any")
    assert not py.allows(2, "ocrstream submit") and py.allows(0, "anything")
    assert not diagram.runnable and diagram.id == "X.md:27"


def test_directives_parse_and_unknown_ones_are_refused():
    assert parse_directives(["covered-by=tests/test_x.py reason=a reason with words like needs and skip",
                             "timeout=300 expect=4 done, 1 failed"]) == {
        "covered-by": "tests/test_x.py", "reason": "a reason with words like needs and skip",
        "timeout": "300", "expect": ["4 done, 1 failed"]}
    with pytest.raises(ValueError):
        parse_directives(["skipp reason=typo"])


def test_output_comparison_ignores_trailing_space_only():
    assert same_output("a\nb\n", "a  \nb\n\n")
    assert not same_output("a\nb\n", "a\nc\n")


def test_every_block_runs_or_says_why_not():
    blocks = all_blocks()
    assert len(blocks) >= 20 and blocks[0].id == "README.md:14"
    for block in blocks:
        d = block.directives
        if "skip" in d or "covered-by" in d:
            assert d.get("reason"), f"{block.id}: a skipped block names its reason"
        if "covered-by" in d:
            assert (REPO / d["covered-by"]).is_file(), f"{block.id}: {d['covered-by']} does not exist"
        assert block.timeout_s > 0
    running = [b for b in blocks if b.skip_reason is None]
    assert len(running) >= 7  # quick start, library, demo, the walk, HTTP, raw topic, bucket, search
    assert any(b.output is not None for b in running)  # the quick start's output is checked
