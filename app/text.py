"""Showing user-controlled text (class names, file names, run names) literally inside Markdown.

Streamlit renders Markdown in st.markdown, st.caption, alerts and labels, so a class named
``[CLICK-ME](https://evil.example)`` would become a link for every user. Everything a user
or a dataset can name goes through :func:`escape_markdown` before it is put into Markdown.
"""

from __future__ import annotations

import re

__all__ = ["escape_markdown"]

# Markdown's punctuation, plus '$' (Streamlit's LaTeX) and ':' (its emoji and colour shortcodes).
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:])")


def escape_markdown(text: object) -> str:
    """``text`` with every Markdown control character backslash-escaped, on one line."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(text).split()))
