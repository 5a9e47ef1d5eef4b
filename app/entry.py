"""Make every visit go through streamlit_app.py (navigation + shared sidebar).

Streamlit treats a ``pages/`` folder beside the entry file as an old-style
multipage app until ``st.navigation`` has run once in the server process. A
first visit straight to a page URL (a bookmark of /train) would then run the
page alone, without the shared sidebar. Pages call :func:`ensure_navigation`
first: in that situation it switches Streamlit to the ``st.navigation`` app and
reruns, which then resolves the same URL through streamlit_app.py.
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


def ensure_navigation() -> None:
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
