"""medcls dashboard: navigation and the shared sidebar. Pages live in app_pages/."""

# Imported here, first thing in every session's script run: pages and Streamlit itself import pandas on first
# use, and 30 sessions opening pages at once then imported it in parallel threads, where Python's import lock
# can hand one of them the half-initialised module ("partially initialized module 'pandas' has no attribute
# 'Series'", seen in the classroom load test).
import pandas  # noqa: F401
import streamlit as st

from app.dataset import render_sidebar
from app.identity import identity_sidebar, require_login
from app.manager import manager
from app.safety import apply_exposure, page_errors
from app.url_state import FORM_KEY, restore_form, save_form

st.set_page_config(page_title="medcls", page_icon="🩺", layout="wide")
apply_exposure()  # listening beyond this machine: only uploads and configured folders, no server paths shown
require_login()  # only when the operator configured an OpenID Connect provider

data_page = st.Page("app_pages/data.py", title="Data explorer", icon="🔎", url_path="data")


def front_door() -> None:
    """The app's root URL opens the Data explorer at its own address (/data), keeping the URL's settings.

    The Data explorer is not Streamlit's default page itself: a default page lives at the root URL only, and
    its own address (/data) would say "Page not found".
    """
    # Before the sidebar's widgets exist: once they are drawn, their URL-bound parameters may not be set by hand.
    st.switch_page(data_page, query_params=st.query_params.to_dict())


front = st.Page(front_door, title="medcls", url_path="start", default=True, visibility="hidden")
pages = st.navigation([
    front,
    data_page,
    st.Page("app_pages/train.py", title="Train", icon="🏋️", url_path="train"),
    st.Page("app_pages/sweeps.py", title="Sweeps", icon="🧪", url_path="sweeps"),
    st.Page("app_pages/lessons.py", title="Lessons", icon="🎓", url_path="lessons"),
    st.Page("app_pages/compare.py", title="Compare runs", icon="📊", url_path="compare"),
    st.Page("app_pages/try_it.py", title="Try it", icon="🖼️", url_path="try"),
])
if pages is front:
    pages.run()
with page_errors():
    # The job manager starts with the app, not with the first page that trains: runs left queued or interrupted
    # go on, and its standby training process warms up while the first page is read.
    manager()
    restore_form()  # a refresh: the Train form's options come back from the URL
    data = render_sidebar()
    identity_sidebar()  # who this is: a name, the instructor role; every page asks app.identity.identity()
    if FORM_KEY in st.session_state:  # every page keeps the form's options in the URL, not only the Train page
        save_form(st.session_state[FORM_KEY], data)
st.sidebar.caption("medcls is a teaching tool for image classifiers. It does not diagnose anything.")
with page_errors():  # whatever a page raises is shown as a message, never as a traceback
    pages.run()
