"""Loads the built documentation site in headless Chromium and checks that it rendered.

Serves ``site/`` (built by ``bash scripts/docs.sh``) over http.server on 127.0.0.1 at a free
port, and for each page asks Chromium for the DOM after load (``--dump-dom``):

* the home page: its title, the navigation (with the user guide and the API reference), and
  the README's introduction in the content;
* the API page of ``search``: its title and the signature of ``search`` as text;
* navigation: the home page's nav link to "Getting started" is followed and that page loads
  with its own title; a README anchor link (``#reliability``) leads to a page that has it.

Exits 0 when every check passes, 1 with the failures listed otherwise, 2 when no browser or
no built site is found. Usage: ``python scripts/check_docs_browser.py [--site site]
[--browser PATH]`` (or ``CHROMIUM=PATH``).
"""

from __future__ import annotations

import argparse
import functools
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlsplit

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
        pass


def find_browser(explicit: str | None) -> str | None:
    if explicit:  # asked for by name: that one or none
        return shutil.which(explicit)
    for name in (os.environ.get("CHROMIUM"), *BROWSERS):
        if name and (path := shutil.which(name)):
            return path
    return None


def dump_dom(browser: str, url: str, profile: str) -> str:
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
        "--virtual-time-budget=5000", "--dump-dom", url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"{browser} could not load {url} (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return proc.stdout


def text_of(dom: str) -> str:
    """The visible text of a DOM, whitespace collapsed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL | re.IGNORECASE)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", dom)))


def title_of(dom: str) -> str:
    match = re.search(r"<title>(.*?)</title>", dom, re.DOTALL)
    return html.unescape(match.group(1)).strip() if match else ""


def primary_nav(dom: str) -> str:
    """The site navigation (mkdocs-material's primary sidebar), or "" when the page has none."""
    start = dom.find('class="md-nav md-nav--primary"')
    if start < 0:
        return ""
    end = dom.find("md-sidebar--secondary", start)
    return dom[start:end if end > 0 else len(dom)]


def nav_link(dom: str, label: str) -> str | None:
    """The href of the navigation link whose text is ``label``."""
    for href, inner in re.findall(r'<a [^>]*href="([^"]+)"[^>]*>(.*?)</a>', primary_nav(dom), re.DOTALL):
        if text_of(inner).strip() == label:
            return html.unescape(href)
    return None


def run_checks(base: str, browser: str) -> list[str]:
    failures: list[str] = []

    def check(ok: bool, message: str) -> None:
        print(("ok    " if ok else "FAIL  ") + message)
        if not ok:
            failures.append(message)

    with tempfile.TemporaryDirectory() as profile:
        home = dump_dom(browser, base, profile)
        check(title_of(home).startswith("lightning_maggy"), f"home page title is {title_of(home)!r}")
        nav_text = text_of(primary_nav(home))
        check(bool(nav_text.strip()), "home page has the navigation")
        for label in ("Getting started", "User guide", "Searching a module class", "Benchmarks", "API reference"):
            check(label in nav_text, f"navigation shows {label!r}")
        home_text = text_of(home)
        check("Asynchronous, distributed hyperparameter search" in home_text,
              "home page shows the README's introduction")

        api_url = urljoin(base, "api/search/")
        api = dump_dom(browser, api_url, profile)
        check(title_of(api).startswith("search and results"), f"API page title is {title_of(api)!r}")
        api_text = text_of(api)
        check("search(module_or_fn: Any, space: Searchspace" in api_text,
              "API page shows the signature of search()")
        check("class SearchResult" in api_text or "SearchResult(" in api_text, "API page documents SearchResult")

        href = nav_link(home, "Getting started")
        check(href is not None, "home page has a nav link to 'Getting started'")
        if href is not None:
            target = urljoin(base, href)
            page = dump_dom(browser, target, profile)
            check(title_of(page).startswith("Getting started"),
                  f"nav link {href!r} loads 'Getting started' (title {title_of(page)!r})")

        anchors = re.findall(r'href="([^"]*#reliability)"', home)
        check(bool(anchors), "home page links to the Reliability section")
        if anchors:
            target = urljoin(base, html.unescape(anchors[0]))
            page = dump_dom(browser, target, profile)
            check('id="reliability"' in page, f"README anchor link {anchors[0]!r} leads to a page with #reliability")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default=str(Path(__file__).resolve().parents[1] / "site"))
    parser.add_argument("--browser", help="the Chromium executable (default: CHROMIUM, then PATH)")
    args = parser.parse_args()

    site = Path(args.site)
    if not (site / "index.html").is_file():
        print(f"check_docs_browser: no built site at {site}; run `bash scripts/docs.sh` first", file=sys.stderr)
        return 2
    browser = find_browser(args.browser)
    if browser is None:
        print(f"check_docs_browser: no Chromium found (tried {', '.join(BROWSERS)}); install one, "
              "e.g. `apt-get install -y chromium`, or pass --browser", file=sys.stderr)
        return 2

    handler = functools.partial(_Quiet, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"serving {site} at {base}; browser {browser}")
    try:
        failures = run_checks(base, browser)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        failures = [str(err)]
    finally:
        server.shutdown()
        server.server_close()
    if failures:
        print(f"check_docs_browser: {len(failures)} check(s) failed:", file=sys.stderr)
        for failure in failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print(f"check_docs_browser: all checks passed ({urlsplit(base).netloc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
