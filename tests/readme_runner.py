"""The README runner's parts (issue 27): every shell and Python fenced block of README.md and docs/*.md,
extracted in order with what the text around it says about it, and run as a reader runs it
(tests/test_readme.py).

A block is runnable when its fence says ``bash``, ``sh``, ``shell`` or ``python``. Its printed output
is checked when the README shows it: a fence without a language right after the block (blank lines
only between) holds what the block prints on stdout, compared line by line (trailing spaces and
blank lines at the end ignored). HTML comments on the lines just above a fence (invisible on
GitHub) say more, one or several::

    <!-- readme-runner: skip reason=needs Docker (Jaeger) -->
    <!-- readme-runner: covered-by=tests/test_doors.py reason=a door with a keys file and $KEY -->
    <!-- readme-runner: allow-exit=1:submit reason=samples/truncated.jpg fails on purpose -->
                                                 (status 1 allowed for commands with the word ``submit``)
    <!-- readme-runner: needs=kcat -->            (skipped, saying so, when the command is missing)
    <!-- readme-runner: expect=s3://ocrstream/inbox/receipt.png -->   (stdout + stderr contain it)
    <!-- readme-runner: timeout=240 -->           (seconds; default DEFAULT_TIMEOUT_S)

Every skip names its reason, and ``covered-by`` a test file that exists (tests/unit/test_readme_runner.py
checks both).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The documents whose blocks run, in this order.
DOCUMENTS = ("README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))
SHELLS = ("bash", "sh", "shell")
RUNNABLE = (*SHELLS, "python")
DEFAULT_TIMEOUT_S = 120.0
DIRECTIVES = ("skip", "covered-by", "allow-exit", "needs", "expect", "timeout", "reason")
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")
_COMMENT = re.compile(r"^\s*<!--\s*readme-runner:(?P<body>.*?)-->\s*$")


@dataclass
class Block:
    """One fenced block: where it is (``document``, 1-based ``line`` of its opening fence), its
    language, its code (dedented to its fence), the output the document shows after it (None: none
    shown) and its directives (``{"skip": "", "reason": "...", "expect": [...], ...}``)."""

    document: str
    line: int
    lang: str
    code: str
    output: str | None = None
    directives: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.lang in RUNNABLE

    @property
    def skip_reason(self) -> str | None:
        """Why the runner does not run this block (None: it runs)."""
        d = self.directives
        if "skip" in d:
            return f"skipped: {d.get('reason', '')}"
        if "covered-by" in d:
            return f"covered by {d['covered-by']}: {d.get('reason', '')}"
        return None

    def allows(self, status: int, command: str) -> bool:
        """Whether ``command`` may exit with ``status``: ``allow-exit=1`` (any command) or
        ``allow-exit=1:submit`` (commands holding the word ``submit``), several comma-separated."""
        for item in filter(None, self.directives.get("allow-exit", "").split(",")):
            code, _, word = item.partition(":")
            if int(code) == status and (not word or word in command.split()):
                return True
        return status == 0

    @property
    def timeout_s(self) -> float:
        return float(self.directives.get("timeout", DEFAULT_TIMEOUT_S))


def parse_directives(comments: list[str]) -> dict:
    """``{key: value}`` of ``readme-runner`` comment bodies: ``key`` or ``key=value`` (one word), and
    ``reason=`` / ``expect=`` whose value is the rest of the comment (``expect`` collects a list);
    raises ValueError for an unknown key."""
    out: dict = {}
    for body in comments:
        rest = body.strip()
        while rest:
            m = re.match(r"(?P<key>[\w-]+)(?:=(?P<value>\S*))?\s*", rest)
            if m is None or m["key"] not in DIRECTIVES:
                raise ValueError(f"unknown readme-runner directive in {body!r}")
            key = m["key"]
            if key in ("reason", "expect"):
                value, rest = rest[len(key) + 1:].strip(), ""
            else:
                value, rest = m["value"] or "", rest[m.end():]
            if key == "expect":
                out.setdefault("expect", []).append(value)
            else:
                out[key] = value
    return out


def extract_blocks(document: str, text: str | None = None) -> list[Block]:
    """Every fenced block of ``document`` (a path relative to the repository), in order; the output
    block following a runnable block is attached to it (``output``), not listed on its own."""
    lines = (text if text is not None else (REPO / document).read_text()).splitlines()
    blocks: list[Block] = []
    i, previous_end = 0, -1  # previous_end: the line of the last closing fence
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = len(m["indent"]), m["lang"].lower(), i
        body = []
        i += 1
        while i < len(lines) and not re.match(r"^ *```\s*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        code = "\n".join(body) + "\n"
        comments, j = [], start - 1
        while j >= 0 and _COMMENT.match(lines[j]):
            comments.insert(0, _COMMENT.match(lines[j])["body"])  # type: ignore[index]
            j -= 1
        previous = blocks[-1] if blocks else None
        gap = lines[previous_end + 1:start]
        if (lang in ("", "text", "console") and previous is not None and previous.runnable
                and previous.output is None and all(not g.strip() for g in gap)):
            previous.output = code
        else:
            blocks.append(Block(document, start + 1, lang, code, None, parse_directives(comments)))
        previous_end = i
        i += 1
    return blocks


def all_blocks() -> list[Block]:
    """The runnable blocks of every document in :data:`DOCUMENTS`, in reading order."""
    return [b for doc in DOCUMENTS for b in extract_blocks(doc) if b.runnable]


def same_output(shown: str, printed: str) -> bool:
    """``printed`` is what the document shows, line by line, trailing spaces and end blank lines aside."""
    def norm(s: str) -> list[str]:
        return [line.rstrip() for line in s.rstrip().splitlines()]

    return norm(shown) == norm(printed)
