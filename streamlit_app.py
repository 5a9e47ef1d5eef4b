"""medcls dashboard: navigation and the shared sidebar. Pages live in app_pages/."""

import streamlit as st

from app.dataset import render_sidebar
from app.safety import apply_exposure, page_errors

st.set_page_config(page_title="medcls", page_icon="🩺", layout="wide")
apply_exposure()  # listening beyond this machine: only uploads and configured folders, no server paths shown

pages = st.navigation([
    st.Page("app_pages/data.py", title="Data explorer", icon="🔎", url_path="data", default=True),
    st.Page("app_pages/train.py", title="Train", icon="🏋️", url_path="train"),
    st.Page("app_pages/sweeps.py", title="Sweeps", icon="🧪", url_path="sweeps"),
    st.Page("app_pages/compare.py", title="Compare runs", icon="📊", url_path="compare"),
    st.Page("app_pages/try_it.py", title="Try it", icon="🖼️", url_path="try"),
])
with page_errors():
    render_sidebar()
st.sidebar.caption("medcls is a teaching tool for image classifiers. It does not diagnose anything.")
with page_errors():  # whatever a page raises is shown as a message, never as a traceback
    pages.run()
