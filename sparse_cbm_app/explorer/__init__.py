"""``sparse-cbm serve``: the explorer, a local web app on a trained model (``server``: FastAPI; ``static/``:
one page of plain JavaScript, no build step). See docs/explorer.md."""
