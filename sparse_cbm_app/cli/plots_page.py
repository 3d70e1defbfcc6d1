"""The page ``dvc plots show`` fills: DVC's own page with Vega, Vega-Lite and Vega-Embed inlined, so that its
charts draw offline (DVC's default page loads them from a CDN, and shows a blank page without network).

``.dvc/config`` points DVC at it (``plots.html_template``, relative to ``.dvc/``). The page is committed; this
module writes it again from ``vl-convert-python``'s bundle of the three libraries (the bundle Altair inlines
for offline HTML), at a Vega-Lite 5 matching the specs DVC writes:

    pip install vl-convert-python && python -m sparse_cbm_app.cli.plots_page

``--check`` exits 1 when the committed page is not what the bundle installed here would write.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

PAGE = Path(".dvc/plots_page.html")      # plots.html_template in .dvc/config is this path, relative to .dvc/
VEGA_LITE = "v5.21"                      # DVC's specs are Vega-Lite 5 ($schema .../vega-lite/v5.json)
PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")

TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- DVC's page (dvc_render.html.PAGE_HTML) with its CDN scripts replaced by one inline bundle of
         @@ABOUT@@ (each BSD-3-Clause), written by `python -m sparse_cbm_app.cli.plots_page`. -->
    <script type="text/javascript">
@@BUNDLE@@
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def page_text() -> str:
    """The page, from the installed vl-convert-python."""
    try:
        import vl_convert as vlc
    except ImportError:
        raise SystemExit("plots_page: needs vl-convert-python, which bundles Vega for offline pages: "
                         "`pip install vl-convert-python`") from None
    bundle = vlc.javascript_bundle(vl_version=VEGA_LITE)
    clashes = [p for p in PLACEHOLDERS + ("</script",) if p in bundle]
    if clashes:
        raise SystemExit(f"plots_page: the bundle holds {', '.join(clashes)}, which DVC's template or the page "
                         f"would misread; this vl-convert-python cannot be inlined as is")
    about = (f"Vega {vlc.get_vega_version()}, Vega-Lite {VEGA_LITE.lstrip('v')} and Vega-Embed "
             f"{vlc.get_vega_embed_version()} (vl-convert-python {_version()})")
    return TEMPLATE.replace("@@ABOUT@@", about).replace("@@BUNDLE@@", bundle)


def _version() -> str:
    from importlib.metadata import version

    return version("vl-convert-python")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparse_cbm_app.cli.plots_page", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when the page is stale")
    args = parser.parse_args(argv)
    text = page_text()
    if args.check:
        same = PAGE.is_file() and PAGE.read_text(encoding="utf-8") == text
        print(f"{PAGE}: {'up to date' if same else 'stale: run python -m sparse_cbm_app.cli.plots_page'}")
        return 0 if same else 1
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE} ({len(text) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
