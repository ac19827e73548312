"""The documentation: README.md stays short, every relative link resolves, and the mkdocs
site under docs/ builds with ``--strict`` (a broken link, anchor or page fails the suite)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_CHARS = 12_000

# [text](target) or [text](target "title"); images ![alt](target) too
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    """``text`` without code blocks and inline code, where brackets are not links."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def _links(path: Path) -> list[str]:
    return _LINK.findall(_prose(path.read_text(encoding="utf-8")))


def _slug(heading: str) -> str:
    """The anchor mkdocs' ``toc`` extension gives a heading (its default ``slugify``)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(path: Path) -> set[str]:
    """Anchors of ``path``'s headings (lines starting with # inside code blocks are not)."""
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(h) for h in _HEADING.findall(text)}


def _doc_files() -> list[Path]:
    return [README, ROOT / "bench" / "README.md", *sorted(DOCS.glob("*.md"))]


def test_readme_is_short() -> None:
    n = len(README.read_text(encoding="utf-8"))
    assert n <= README_MAX_CHARS, (
        f"README.md has {n:,} characters, more than {README_MAX_CHARS:,}: move reference "
        "material to a page in docs/ and link it"
    )


def test_docs_pages_exist() -> None:
    pages = {p.name for p in DOCS.glob("*.md")}
    for page in ("index.md", "install.md", "collect.md", "bc.md", "rl.md", "world-model.md",
                 "merge.md", "pipeline.md", "run-folders.md", "architecture.md"):  # fmt: skip
        assert page in pages, f"docs/{page} is missing"


@pytest.mark.parametrize("doc", _doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
            continue  # https:, mailto: ...: not checked here (no network in the suite)
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target} (no such file: {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading with anchor #{anchor} in {dest.name})")
    where = doc.relative_to(ROOT)
    assert not broken, f"{where}: broken relative links:\n  " + "\n  ".join(broken)


def test_links_are_found() -> None:
    """The link checker sees the README's links (guards the regex itself)."""
    targets = _links(README)
    assert "docs/run-folders.md" in targets
    assert all("`" not in t for t in targets)


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: ./scripts/install.sh --dev")
    pytest.importorskip(
        "material", reason="mkdocs-material is not installed: ./scripts/install.sh --dev"
    )
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # material's banner, not a doc problem
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()
