"""Reading run folders and turning their results into plots, tables and one self-contained HTML page.

``runs``: finding and reading run folders (run.json, predictions, metrics.json) against their split.
``plots``: the matplotlib figures. ``page``: the Markdown/CSV tables and the HTML page. ``assemble``: the whole
report, as ``meid-bench report`` writes it. Nothing is imported here, so reading runs does not load matplotlib.
"""
