"""medcls dashboard: navigation and the shared sidebar. Pages live in app_pages/."""

import streamlit as st

from app.dataset import render_sidebar

st.set_page_config(page_title="medcls", page_icon="🩺", layout="wide")

pages = st.navigation([
    st.Page("app_pages/data.py", title="Data explorer", icon="🔎", url_path="data", default=True),
    st.Page("app_pages/train.py", title="Train", icon="🏋️", url_path="train"),
    st.Page("app_pages/sweeps.py", title="Sweeps", icon="🧪", url_path="sweeps"),
    st.Page("app_pages/compare.py", title="Compare runs", icon="📊", url_path="compare"),
    st.Page("app_pages/try_it.py", title="Try it", icon="🖼️", url_path="try"),
])
render_sidebar()
st.sidebar.caption("medcls is a teaching tool for image classifiers. It does not diagnose anything.")
pages.run()
