"""The report: PNG figures (matplotlib) and one page, in HTML and in Markdown."""
