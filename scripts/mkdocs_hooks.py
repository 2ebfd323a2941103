"""MkDocs hook: README anchors in the pages that include README sections; Sphinx roles in
docstrings.

The docs pages include README sections with pymdownx.snippets, and the README links to its own
sections by anchor (``see [Reliability](#reliability)``). On GitHub those anchors are on the same
page; on the site each section lives on a page of its own. This hook rewrites a same-page link
``#anchor`` that the rendered page does not contain into a link to the docs page whose heading
has that anchor (``../reliability.md#reliability``), before MkDocs resolves and validates links,
so strict mode still checks every one of them. An anchor that no page has is left alone for
MkDocs to report.

The package's docstrings are Google style with a few Sphinx roles in the prose
(``:class:`~lightning_maggy.exceptions.TrialDropped```, ``Example::``), which Markdown shows
as they are. ``on_page_content`` turns a role into a cross-reference that mkdocs-autorefs
resolves when the target is documented on the site (and into plain code otherwise; a bare or
re-exported name, ``Searchspace`` or ``lightning_maggy.search``, is looked up by its last part
among the objects the API pages render), and ``Example::`` into ``Example:``.
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as etree
from pathlib import Path
from typing import Any

from markdown import Extension, Markdown
from markdown.extensions.toc import slugify
from markdown.treeprocessors import Treeprocessor

_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):<code>(~?)([\w.]+)(\(\))?</code>")
_LITERAL_BLOCK = re.compile(r"::</p>")

_INJECTION = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)

_state: dict[str, Any] = {"page": None, "anchors": {}, "objects": {}}


def _headings(markdown: str) -> list[str]:
    """The anchors MkDocs' toc gives the headings of ``markdown`` (code fences skipped)."""
    out, in_fence = [], False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence and (m := _HEADING.match(line)):
            out.append(slugify(m.group(1).replace("`", ""), "-"))
    return out


class _Rewrite(Treeprocessor):
    def run(self, root: etree.Element) -> None:
        page = _state["page"]
        if page is None:
            return
        present = {el.get("id") for el in root.iter() if el.get("id")}
        for el in root.iter("a"):
            href = el.get("href") or ""
            if not href.startswith("#") or href[1:] in present:
                continue
            target = _state["anchors"].get(href[1:])
            if target is None or target == page:
                continue
            rel = posixpath.relpath(target, posixpath.dirname(page) or ".")
            el.set("href", f"{rel}{href}")


class _RewriteExtension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:  # noqa: N802 (Markdown's API)
        # After toc (5), which gives headings their ids; before MkDocs' relpath (0).
        md.treeprocessors.register(_Rewrite(md), "readme_anchor_links", 3)


def on_config(config: Any, **_: Any) -> Any:
    config.markdown_extensions.append(_RewriteExtension())
    return config


def on_files(files: Any, config: Any, **_: Any) -> Any:
    pages: dict[str, set[str]] = {}
    objects: dict[str, set[str]] = {}
    for file in files.documentation_pages():
        text = Path(file.abs_src_path).read_text(encoding="utf-8")
        for anchor in _headings(text):
            pages.setdefault(anchor, set()).add(file.src_uri)
        for path in _INJECTION.findall(text):
            objects.setdefault(path.rsplit(".", 1)[-1], set()).add(path)
    _state["objects"] = {name: next(iter(paths)) for name, paths in objects.items() if len(paths) == 1}
    # An anchor on several pages is ambiguous: such links are left for MkDocs to report.
    _state["anchors"] = {anchor: next(iter(srcs)) for anchor, srcs in pages.items() if len(srcs) == 1}
    return files


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    _state["page"] = page.file.src_uri
    return markdown


def _role(match: re.Match[str]) -> str:
    tilde, name, call = match.group(1), match.group(2), match.group(3) or ""
    last = name.rsplit(".", 1)[-1]
    title = (last if tilde else name) + call
    identifier = _state["objects"].get(last, name)
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def on_page_content(html: str, **_: Any) -> str:
    return _LITERAL_BLOCK.sub(":</p>", _ROLE.sub(_role, html))
