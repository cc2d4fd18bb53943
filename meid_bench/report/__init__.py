"""Reading run folders and turning their results into plots, tables and one self-contained HTML page.

``runs``: finding and reading run folders (run.json, predictions, metrics, log.jsonl) against their split.
``sections``: the runs of one split and the verdict line that opens the report for it. ``paired``: paired
differences between methods over shared seeds, with t intervals. ``tables``: the results as frames, CSV and
Markdown. ``plots``: the matplotlib figures. ``page``: the HTML page. ``assemble``: the whole report, as
``meid-bench report`` writes it. Nothing is imported here, so reading runs does not load matplotlib.
"""
