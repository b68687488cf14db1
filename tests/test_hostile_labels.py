"""A package's labels and metrics keys are the package author's text, not the page's markup: they reach the page as
text, wherever it shows them (issue 20: a label holding an <img> tag made visitors' browsers load a third-party
image from the per-class table)."""

from __future__ import annotations

from html import unescape

import pytest
from markdown_it import MarkdownIt

from skin_demo import page
from skin_demo.settings import Settings
from skin_demo.taxonomy import display_name
from tests import image_files as files
from tests.served_app import serve
from tests.test_browser import DESKTOP, open_page, upload, wait_for_charts
from tests.tiny_packages import make_models_dir, make_package


def hostile_labels(site: str) -> tuple[str, ...]:
    """Seven lesion-type labels, four of them markup that would load, link or break the table."""
    return (f'<img src="{site}/tag.png" id="evil">', f"![x]({site}/markdown.png)", f"[link]({site}/link)", "a|b",
            "nv", "mel", "bcc")  # fmt: skip


def test_markdown_text_renders_every_label_as_itself():
    """The per-class table and the models list are Markdown: rendered as CommonMark with tables, each hostile label
    is one cell of plain text."""
    md = MarkdownIt("commonmark").enable("table")
    for label in [*hostile_labels("http://127.0.0.1:9"), "&lt;b&gt;", "*bold* _x_ `code`", "\\", "<http://x>"]:
        html = md.render(f"| a | b |\n|---|---|\n| x | {page.markdown_text(label)} |\n")
        assert html.count("<td>") == 2, (label, html)  # one row, two cells
        cell = html.split("<td>")[2].split("</td>")[0]
        assert "<" not in cell, (label, html)  # no tag at all: no image, no link, no HTML of the label's
        assert unescape(cell) == label, (label, cell)


@pytest.mark.browser
def test_hostile_labels_reach_the_page_as_text(browser, local_site, tmp_path):
    site, hits = local_site
    models = make_models_dir(tmp_path / "models")
    labels = hostile_labels(site)
    make_package(models / "lesion_type", "lesion_type", labels=labels, malignant_labels=("mel", "bcc"))
    settings = Settings(models_dir=models, examples_dir=tmp_path / "none", threads=1)
    with serve(tmp_path, settings=settings) as app:
        page = open_page(browser, app.url, **DESKTOP)
        upload(page, files.jpeg(tmp_path / "lesion.jpg", 400, 300, seed=11))
        wait_for_charts(page)
        page.locator("#all-numbers button").first.click()
        page.wait_for_selector("#per-class table")
        table = page.locator("#per-class")
        assert table.locator("img").count() == 0 and table.locator("a").count() == 0
        text = table.inner_text()
        assert all(display_name(label) in text for label in labels), text  # the codes by their names, the rest as is
        assert page.locator("#evil").count() == 0
        page.wait_for_timeout(500)  # an image the page would load has had time to be requested
        outside = page.outside_requests
        page.context.close()
    assert hits == [] and outside == [], "the page contacted the host a label named"
