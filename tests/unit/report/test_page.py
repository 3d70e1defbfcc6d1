"""The report page's two renderings: Markdown and self-contained HTML from one ``Page``."""

import base64
import re
from html.parser import HTMLParser

from PIL import Image

from sparse_cbm.report.page import Page, Section, headline_table, method_label, number, render_html, render_markdown

METRICS = {"methods": {"cbm": "CBM (l1)", "zero_shot": "zero-shot CLIP"},
           "test": {"cbm": {"top1": 0.91237, "top5": 1.0, "macro_f1": 0.9}, "zero_shot": {"top1": 0.25, "top5": None}},
           "val": {"cbm": {"top1": 0.5, "top5": 0.75, "macro_f1": 0.123456}}}


class Parsed(HTMLParser):
    """Headings, paragraphs, tables (cells as text), images and preformatted blocks of a page."""

    def __init__(self, text):
        super().__init__()
        self.h1, self.h2, self.p, self.pre, self.tables, self.images, self.banner = [], [], [], [], [], [], []
        self._into = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")
            self._into = self.tables[-1][-1]
        elif tag in ("h1", "h2", "p", "pre") or (tag == "div" and attrs.get("class") == "banner"):
            target = self.banner if tag == "div" else getattr(self, tag)
            target.append("")
            self._into = target

    def handle_data(self, data):
        if self._into is not None:
            self._into[-1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th", "h1", "h2", "p", "pre", "div"):
            self._into = None


def test_numbers_are_floats_to_four_places_and_a_dash_for_none():
    assert [number(v) for v in (0.91237, 1.0, 112.0, 3, None, "0.5000 (0.2500)", True)] == \
        ["0.9124", "1.0000", "112.0000", "3", "–", "0.5000 (0.2500)", "True"]


def test_headline_table_names_each_method_and_keeps_missing_values_missing():
    assert method_label("cbm", METRICS) == "CBM (l1)" and method_label("other", METRICS) == "other"
    assert headline_table(METRICS) == [["method", "top-1", "top-5", "macro F1"], ["CBM (l1)", 0.91237, 1.0, 0.9],
                                       ["zero-shot CLIP", 0.25, None, None]]
    assert headline_table(METRICS, "val")[1] == ["CBM (l1)", 0.5, 0.75, 0.123456]


def page(tmp_path):
    (tmp_path / "figures").mkdir()
    Image.new("RGB", (6, 4), (200, 10, 10)).save(tmp_path / "figures" / "a.png")
    return Page(title="Report: <shapes> & co", banner="RANDOM weights <b>",
                sections=[Section("Headline", "3 < 4 & 5 > 2", table=headline_table(METRICS), figures=["figures/a.png"]),
                          Section("Empty"),
                          Section("Params", code="seed: 0\nname: <x>\n")])


def test_markdown_holds_every_section_cell_figure_and_code_block(tmp_path):
    md = render_markdown(page(tmp_path))
    lines = md.splitlines()
    assert lines[0] == "# Report: <shapes> & co" and "> **RANDOM weights <b>**" in lines
    assert [line[3:] for line in lines if line.startswith("## ")] == ["Headline", "Empty", "Params"]
    assert "| method | top-1 | top-5 | macro F1 |" in lines and "|---|---|---|---|" in lines
    assert "| CBM (l1) | 0.9124 | 1.0000 | 0.9000 |" in lines and "| zero-shot CLIP | 0.2500 | – | – |" in lines
    assert re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", md) == [("a", "figures/a.png")]
    assert "```\nseed: 0\nname: <x>\n```" in md
    assert render_markdown(Page("t", None, [])) == "# t\n"  # no banner line without a banner


def test_html_escapes_text_and_inlines_each_figure_as_its_own_bytes(tmp_path):
    text = render_html(page(tmp_path), tmp_path)
    assert text.startswith("<!DOCTYPE html>") and text.endswith("</body></html>\n")
    assert "<shapes>" not in text and "<b>" not in text and "<x>" not in text  # all escaped
    parsed = Parsed(text)
    assert parsed.h1 == ["Report: <shapes> & co"] and parsed.banner == ["RANDOM weights <b>"]
    assert parsed.h2 == ["Headline", "Empty", "Params"] and parsed.p == ["3 < 4 & 5 > 2"]
    assert parsed.tables == [[["method", "top-1", "top-5", "macro F1"], ["CBM (l1)", "0.9124", "1.0000", "0.9000"],
                              ["zero-shot CLIP", "0.2500", "–", "–"]]]
    assert parsed.pre == ["seed: 0\nname: <x>\n"]
    (img,) = parsed.images
    assert img["data-file"] == "figures/a.png" and img["alt"] == "a"
    assert img["src"].startswith("data:image/png;base64,")
    assert base64.b64decode(img["src"].split(",", 1)[1]) == (tmp_path / "figures" / "a.png").read_bytes()
    assert "http" not in text.replace("http-equiv", "")  # no external resource
    assert 'class="banner"' not in render_html(Page("t", None, []), tmp_path)
