"""Data files: JSON lines in (conversations, completions, labels), records out.

`jsonl.py` reads lines with located errors; `records.py` turns a line into a
conversation, a completion and its response type (the one routing rule);
`classify.py` and `grade.py` are the `rbrc classify` and `rbrc grade` stages.
"""
