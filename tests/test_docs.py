"""The documentation runs: every ```python block of README.md and docs/*.md, as pasted.

Each block runs in its own Python process, in a fresh folder that holds the bundled sample clip
(``examples/sample_talking_head_640x360.mp4``) under the names the docs use (:data:`INPUTS`),
so a block must be complete: its own imports, its own inputs. A block that raises fails the
test, with the block's place (``README.md:84``) and the end of its output.

The few blocks that cannot run here are marked in the doc source by a comment on the line
before the block (blank lines between are allowed, prose is not)::

    <!-- docs-test: needs a CUDA GPU -->
    <!-- docs-test: skip signatures, not a program -->

``needs ...`` and ``skip ...`` both skip the block with that reason, which pytest reports
(``-ra``). Any other ``docs-test:`` text is an error, so a typo cannot hide a block. Keep the
blocks small: short ranges (``end="8f"``), small tensors; the whole file takes about a minute
on 2 cores, most of it the one-time ONNX export of the bundled weights into the session's cache.

:func:`test_names_the_docs_mention_exist` also checks that every ``rvmatte.x.y`` name and
every repository path the docs mention in backticks still exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SAMPLE = REPO / "examples" / "sample_talking_head_640x360.mp4"
# name in the block's folder -> file copied there
INPUTS = {"talk.mp4": SAMPLE, "in.mp4": SAMPLE, "clips/talk.mp4": SAMPLE}
TIMEOUT_S = 300  # one block; they take seconds (the first one also exports the ONNX graph)

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})(?P<lang>[^`\s]*)[^`]*$")
_MARKER = re.compile(r"<!--\s*docs-test:(?P<text>.*?)-->")


@dataclass(frozen=True)
class Block:
    """A ```python block: where it is (``line``: 1-based, of its first code line), its code
    (dedented) and why it is skipped (None: it runs)."""

    path: Path
    line: int
    code: str
    skip: Optional[str] = None

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}"


def marker_reason(text: str) -> str:
    """``docs-test:`` marker text -> the skip reason. ``needs X`` -> ``"needs X"``,
    ``skip X`` -> ``"X"``; anything else is a ValueError."""
    text = " ".join(text.split())
    word, _, rest = text.partition(" ")
    if word == "needs" and rest:
        return text
    if word == "skip" and rest:
        return rest
    raise ValueError(f"unknown docs-test marker {text!r}: use 'needs <what>' or 'skip <why>'")


def extract_blocks(text: str, path: Path) -> list[Block]:
    """The ```python (or ```py) blocks of a Markdown ``text``, each with the reason of the
    ``<!-- docs-test: ... -->`` marker right before it, if any. Fences of other languages are
    passed over whole (a ``` inside them is not a fence). An unclosed fence, or a marker that
    no block follows, is a ValueError (a marker must not be silently lost)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: Optional[tuple[int, str]] = None  # (line, reason) of a marker awaiting its block
    i = 0
    while i < len(lines):
        line = lines[i]
        if "docs-test:" in line and "<!--" in line:
            first = i
            while "-->" not in line and i + 1 < len(lines):  # a marker over several lines
                i += 1
                line += " " + lines[i]
            m = _MARKER.search(line)
            if m is None:
                raise ValueError(f"{path.name}:{first + 1}: unclosed docs-test marker")
            if pending is not None:
                raise ValueError(f"{path.name}:{pending[0]}: docs-test marker without a block")
            pending = (first + 1, marker_reason(m.group("text")))
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip() and pending is not None:
                raise ValueError(f"{path.name}:{pending[0]}: docs-test marker not right "
                                 "before a ```python block")
            i += 1
            continue
        ticks, lang = fence.group("ticks"), fence.group("lang").lower()
        end = i + 1
        while end < len(lines) and not (lines[end].strip().startswith(ticks)
                                        and not lines[end].strip()[len(ticks):].strip()):
            end += 1
        if end == len(lines):
            raise ValueError(f"{path.name}:{i + 1}: unclosed code fence")
        if lang in ("python", "py"):
            code = textwrap.dedent("\n".join(lines[i + 1:end])) + "\n"
            blocks.append(Block(path, i + 2, code, pending[1] if pending else None))
        elif pending is not None:
            raise ValueError(f"{path.name}:{pending[0]}: docs-test marker before a "
                             f"```{lang} block (only python blocks run)")
        pending = None
        i = end + 1
    if pending is not None:
        raise ValueError(f"{path.name}:{pending[0]}: docs-test marker without a block")
    return blocks


def prepare_folder(folder: Path) -> Path:
    """A block's working folder with :data:`INPUTS` in it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in INPUTS.items():
        dst = folder / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return folder


def run_block(block: Block, folder: Path, *, timeout: float = TIMEOUT_S):
    """Run ``block`` as a script in ``folder`` (a fresh Python process; the environment's
    RVMATTE_CACHE_DIR, the suite's, is kept). Returns the CompletedProcess."""
    script = folder.parent / f"{folder.name}-{block.path.stem}-{block.line}.py"
    script.write_text(block.code)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return subprocess.run([sys.executable, str(script)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout)


def check_block(block: Block, folder: Path, *, timeout: float = TIMEOUT_S) -> None:
    """Run ``block`` in ``folder``; an AssertionError naming the block if it fails."""
    r = run_block(block, folder, timeout=timeout)
    if r.returncode != 0:
        tail = (r.stdout[-2000:] + "\n" + r.stderr[-4000:]).strip()
        raise AssertionError(f"the python block at {block.id} failed (exit {r.returncode}):\n"
                             f"{block.code}\n---\n{tail}")


def _all_blocks() -> list[Block]:
    return [b for p in DOCS for b in extract_blocks(p.read_text(encoding="utf-8"), p)]


BLOCKS = _all_blocks()


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block_runs(block: Block, tmp_path):
    if block.skip is not None:
        pytest.skip(f"{block.id}: {block.skip}")
    check_block(block, prepare_folder(tmp_path / "work"))


def _mentions(pattern: str) -> list[tuple[str, str]]:
    found = set()
    for p in DOCS:
        for m in re.finditer(pattern, p.read_text(encoding="utf-8")):
            found.add((p.name, m.group(1)))
    return sorted(found)


def _resolve(dotted: str) -> bool:
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def test_names_the_docs_mention_exist():
    """Every `rvmatte.x.y` in backticks is a module or an attribute (moved code leaves none
    behind), and every `src/...`, `tests/...`, `benchmarks/...`, `scripts/...` path exists."""
    missing = [f"{doc}: {name}" for doc, name in
               _mentions(r"`(rvmatte(?:\.[A-Za-z_][A-Za-z0-9_]*)+)") if not _resolve(name)]
    missing += [f"{doc}: {path}" for doc, path in
                _mentions(r"`((?:src|tests|benchmarks|scripts|examples)/[A-Za-z0-9_./-]+)`")
                if not (REPO / path).exists()]
    assert not missing, "the docs name things that do not exist:\n" + "\n".join(missing)


# ---- the extractor and the runner themselves ----------------------------------------------

def test_docs_have_blocks():
    names = {b.path.name for b in BLOCKS}
    assert {"README.md", "PIPELINE.md"} <= names
    assert sum(b.skip is None for b in BLOCKS) >= 6


def test_extract_blocks_markers_and_fences(tmp_path):
    doc = textwrap.dedent("""\
        # Title

        ```python
        a = 1
        ```

        <!-- docs-test: needs a CUDA GPU -->

        ```python
        import torch
        ```

        ```sh
        echo "```python"
        ```

        - a list item with code:

          ```py
          if True:
              b = 2
          ```

        <!-- docs-test: skip signatures,
             not a program -->
        ```python
        f(x) -> y
        ```
        """)
    blocks = extract_blocks(doc, tmp_path / "X.md")
    assert [(b.line, b.code, b.skip) for b in blocks] == [
        (4, "a = 1\n", None),
        (10, "import torch\n", "needs a CUDA GPU"),
        (20, "if True:\n    b = 2\n", None),
        (27, "f(x) -> y\n", "signatures, not a program"),
    ]
    assert blocks[0].id == "X.md:4"


@pytest.mark.parametrize("doc,error", [
    ("<!-- docs-test: nedds gpu -->\n```python\nx\n```\n", "unknown docs-test marker"),
    ("<!-- docs-test: needs gpu -->\nprose\n```python\nx\n```\n", "not right before"),
    ("<!-- docs-test: needs gpu -->\n```sh\nx\n```\n", "only python blocks run"),
    ("text\n<!-- docs-test: needs gpu -->\n", "without a block"),
    ("```python\nx = 1\n", "unclosed code fence"),
    ("<!-- docs-test: needs gpu\n```python\nx\n```\n", "unclosed docs-test marker"),
])
def test_extract_blocks_refuses_lost_markers(tmp_path, doc, error):
    with pytest.raises(ValueError, match=error):
        extract_blocks(doc, tmp_path / "X.md")


def test_a_raising_block_fails_the_test(tmp_path):
    """A temp copy of the README with one block broken on purpose: the extractor finds it and
    check_block fails with the block's place and the exception, while the intact first block
    of the same copy passes."""
    copy = tmp_path / "README.md"
    text = (REPO / "README.md").read_text(encoding="utf-8")
    copy.write_text(text + "\n```python\nimport rvmatte\n"
                    "raise RuntimeError('broken on purpose')\n```\n", encoding="utf-8")
    blocks = extract_blocks(copy.read_text(encoding="utf-8"), copy)
    broken = blocks[-1]
    assert "broken on purpose" in broken.code and broken.skip is None
    folder = prepare_folder(tmp_path / "work")
    with pytest.raises(AssertionError, match=r"README\.md:\d+ failed[\s\S]*broken on purpose"):
        check_block(broken, folder)
    check_block(Block(copy, 1, "import rvmatte\nassert rvmatte.read_frames\n"), folder)


def test_blocks_run_in_the_inputs_folder(tmp_path):
    folder = prepare_folder(tmp_path / "work")
    block = Block(tmp_path / "X.md", 1, textwrap.dedent("""\
        import os
        assert os.path.getsize("talk.mp4") == os.path.getsize("clips/talk.mp4") > 0
        print(sorted(os.listdir(".")))
        """))
    r = run_block(block, folder)
    assert r.returncode == 0, r.stderr
    assert "'in.mp4'" in r.stdout and "'talk.mp4'" in r.stdout
