"""Showing user-controlled text (class names, file names, run names) literally inside Markdown.

Streamlit renders Markdown in st.markdown, st.caption, alerts, labels, image captions and metric
values, so a class named ``[CLICK-ME](https://evil.example)`` would become a link for every user.
Everything a user or a dataset can name goes through :func:`escape_markdown` before it is put into
Markdown; messages from the library (which quote file names, classes and folders) go through
:func:`shown`, which also hides full server paths on a server others can reach.
"""

from __future__ import annotations

import re

from medcls.settings import redact_paths

__all__ = ["escape_markdown", "shown"]

# Markdown's punctuation, plus '$' (Streamlit's LaTeX) and ':' (its emoji and colour shortcodes).
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:])")


def escape_markdown(text: object) -> str:
    """``text`` with every Markdown control character backslash-escaped, on one line."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def shown(text: object) -> str:
    """A library message or a user-controlled string, ready for Markdown: server paths shortened when the
    server is exposed, then every Markdown character escaped."""
    return escape_markdown(redact_paths(str(text)))
