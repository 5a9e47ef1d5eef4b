"""Who is using this browser: an identity per person, without an account system (see medcls.runs.permissions).

- When the operator configured an OpenID Connect provider (an ``[auth]`` section in ``.streamlit/secrets.toml``),
  Streamlit's own login (``st.login`` / ``st.user``) says who it is; the app asks people to log in first.
- Otherwise each browser gets a random, unguessable token (``secrets.token_urlsafe``) kept in a cookie for a
  year. The server reads it from ``st.context.cookies`` (sent with every page load), so it survives reloads and
  server restarts; it is written by a small script in ``st.html`` (``st.context.cookies`` is read-only). Runs
  record a hash of the token, never the token.
- A display name typed in the sidebar is kept in a second cookie.
- The instructor enters the operator's secret in the sidebar (only shown when one is set); it is checked in
  constant time by the library and kept for this browser tab only.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from urllib.parse import unquote

import streamlit as st

from medcls.runs.attempts import SecretAttempts, wait_words
from medcls.runs.permissions import (
    Identity,
    browser_identity,
    can_manage,
    can_see,
    check_instructor_secret,
    owner_words,
)
from medcls.runs.records import RunMeta
from medcls.runs.summary import RunSummary
from medcls.settings import instructor_secret

from .text import escape_markdown

__all__ = ["identity", "identity_sidebar", "require_login", "run_meta", "visible_runs", "owner_line",
           "manage_refusal", "TOKEN_COOKIE", "NAME_COOKIE"]

TOKEN_COOKIE = "medcls_id"
NAME_COOKIE = "medcls_name"
MAX_DISPLAY_NAME = 40
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,128}\Z")
_YEAR_S = 365 * 24 * 3600


def _load_secrets() -> None:
    """Load ``.streamlit/secrets.toml`` if there is one: Streamlit puts its top-level keys into the environment,
    where medcls.settings reads them (so MEDCLS_INSTRUCTOR_SECRET may live there)."""
    st.secrets.load_if_toml_exists()


def _login_configured() -> bool:
    _load_secrets()
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def _set_cookie(name: str, value: str) -> None:
    """Ask the browser to keep ``name=value`` for a year (Secure over https). Values are JSON-quoted for the
    script and '<' escaped, so no name can close the script tag."""
    quoted = json.dumps(value).replace("<", "\\u003c")
    st.sidebar.html(f"<script>document.cookie = {json.dumps(name)} + '=' + encodeURIComponent({quoted}) + "
            f"'; Max-Age={_YEAR_S}; Path=/; SameSite=Strict' + (location.protocol === 'https:' ? '; Secure' : '');"
            "</script>", unsafe_allow_javascript=True, width="content")


def _cookie(name: str) -> str:
    """A cookie the browser sent with this page load ('' when absent, or without a browser, as in AppTest)."""
    value = st.context.cookies.get(name)
    return value if isinstance(value, str) else ""


def _browser_token() -> str:
    """This browser's token: from its cookie, else a new one (kept for the session and sent to the browser)."""
    token = st.session_state.get("_identity_token")
    if token is None:
        cookie = _cookie(TOKEN_COOKIE)
        token = cookie if _TOKEN.match(cookie) else secrets.token_urlsafe(32)
        st.session_state["_identity_token"] = token
        st.session_state["_identity_cookie_set"] = cookie == token
    return token


def _clean_display_name(text: str) -> str:
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in str(text)).split())
    return text[:MAX_DISPLAY_NAME]


def identity() -> Identity:
    """The person using this session (call after :func:`identity_sidebar` on every script run)."""
    instructor = bool(st.session_state.get("_identity_instructor"))
    if _login_configured() and st.user.is_logged_in:
        subject = f"{st.user.get('iss', '')}|{st.user.get('sub') or st.user.get('email', '')}"
        key = "oidc:" + hashlib.sha256(subject.encode()).hexdigest()[:24]
        name = _clean_display_name(st.user.get("name") or st.user.get("email") or "")
        return Identity(key=key, name=st.session_state.get("_identity_name") or name, instructor=instructor)
    return browser_identity(_browser_token(), st.session_state.get("_identity_name", ""), instructor)


def require_login() -> None:
    """With an OpenID Connect provider configured, ask people to log in before anything else."""
    if not _login_configured() or st.user.is_logged_in:
        return
    st.title("🩺 medcls")
    st.info("This classroom server asks everyone to log in, so that each run is recorded with who started it.")
    st.button("Log in", type="primary", on_click=st.login)
    st.stop()


def identity_sidebar() -> Identity:
    """The sidebar's "You" section: a display name, the instructor's secret (when the operator set one)."""
    if "_identity_name" not in st.session_state:
        st.session_state["_identity_name"] = _clean_display_name(unquote(_cookie(NAME_COOKIE)))
    token = None if _login_configured() else _browser_token()
    if token is not None and not st.session_state.get("_identity_cookie_set"):
        _set_cookie(TOKEN_COOKIE, token)  # kept by the browser: the same identity after a reload or a restart
        st.session_state["_identity_cookie_set"] = True
    sb = st.sidebar
    sb.header("You")
    name = sb.text_input("Your name", value=st.session_state["_identity_name"], max_chars=MAX_DISPLAY_NAME,
                         key="identity_name_input", placeholder="e.g. Ana, or table 4",
                         help="Shown next to the runs you start, so others know whose run it is. It stays in this "
                              "browser.")
    cleaned = _clean_display_name(name)
    if cleaned != st.session_state["_identity_name"]:
        st.session_state["_identity_name"] = cleaned
        _set_cookie(NAME_COOKIE, cleaned)
    if instructor_secret():
        _instructor_box(sb)
    me = identity()
    role = " · instructor" if me.instructor else ""
    sb.caption(f"You are **{escape_markdown(me.words())}**{role}. You can stop, rename and delete the runs you start"
               + ("; as instructor, anyone's." if me.instructor else "."))
    return me


def _instructor_box(sb) -> None:
    if st.session_state.get("_identity_instructor"):
        if sb.button("Leave the instructor role", key="identity_leave_instructor", type="tertiary"):
            st.session_state["_identity_instructor"] = False
        return
    # Keyed, so it stays open across reruns: unkeyed, it was drawn anew (closed) after the first wrong secret of a
    # visit, hiding the message (seen in Chromium).
    with sb.expander("Instructor", key="identity_instructor_box"):
        given = st.text_input("Instructor secret", type="password", key="identity_secret",
                              help="Set by whoever runs this server (MEDCLS_INSTRUCTOR_SECRET). An instructor may "
                                   "stop, rename and delete anyone's runs.")
        wrong = "That is not the instructor secret. Ask whoever runs this server."
        if not given:
            return
        if given == st.session_state.get("_identity_secret_tried"):  # a rerun is not another guess
            st.error(wrong)
            return
        attempts, key = secret_attempts(), identity().key
        wait = attempts.wait_s(key)
        if wait > 0:
            st.warning(f"Too many wrong secrets: try again in {wait_words(wait)}. (Wrong secrets are slowed down "
                       "so that nobody can guess it by trying many.)")
            return
        if check_instructor_secret(given):
            attempts.succeeded(key)
            st.session_state["_identity_instructor"] = True
            st.rerun()
        attempts.failed(key)
        st.session_state["_identity_secret_tried"] = given
        st.error(wrong)


@st.cache_resource(show_spinner=False)
def secret_attempts() -> SecretAttempts:
    """Wrong instructor secrets in this server process, from every session (see medcls.runs.attempts)."""
    return SecretAttempts()


def run_meta(name: str = "") -> RunMeta:
    """The meta a new run of this person gets: who started it (and its name, when given)."""
    me = identity()
    return RunMeta(name=name, owner=me.key, owner_name=me.name)


def visible_runs(summaries: list[RunSummary]) -> list[RunSummary]:
    """The runs this person sees: all of them, unless the operator chose "own runs only"."""
    me = identity()
    return [s for s in summaries if can_see(me, s.owner)]


def owner_line(summary: RunSummary) -> str:
    """'Started by Ana (you)' for a caption, Markdown-escaped."""
    me = identity()
    mine = bool(summary.owner) and summary.owner == me.key
    return f"Started by {escape_markdown(owner_words(summary.owner, summary.owner_name))}" + (" (you)" if mine else "")


def manage_refusal(owner: str, owner_name: str) -> str | None:
    """Why this person may not stop, resume, rename or delete a run of ``owner``; None when they may."""
    if can_manage(identity(), owner):
        return None
    refusal = (f"Only {escape_markdown(owner_words(owner, owner_name))}, who started this run, or an instructor "
               "can stop, resume, rename or delete it.")
    if not instructor_secret():  # no classroom set up: most likely one person, in another browser than before
        refusal += (" Each browser is a person of its own here; whoever runs this server can act on any run from "
                    "the command line (python -m medcls stop, resume, rename or delete, with the id that "
                    "python -m medcls runs lists).")
    return refusal
