"""The data explorer's "Duplicates and leaks" section: duplicate groups, label conflicts, split leaks.

The work is done by :mod:`medcls.data.health`; this only draws the result.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from medcls.config import DataConfig
from medcls.data import DatasetSpec
from medcls.data.explore import thumbnail
from medcls.data.health import (
    DEFAULT_MAX_DISTANCE,
    DuplicateGroup,
    HealthReport,
    Leak,
    check_duplicates,
    made_own_split,
    random_split_leak,
    split_leak,
)
from medcls.data.spec import item_name

from .dataset import current_data_config
from .text import escape_markdown, shown

HEALTH_AUTO_LIMIT = 5000  # larger datasets are checked on request (the first check decodes every image)
GROUPS_SHOWN = 12
THUMBS_PER_GROUP = 6
VIEWS = ("Label conflicts", "Across splits", "All groups")


def duplicates_section(spec: DatasetSpec) -> None:
    """Find duplicates (with a progress bar); show conflicts and leaks first, then the groups with thumbnails."""
    st.subheader("Duplicates and leaks")
    st.caption("The same picture twice (re-exported, cropped a little, with or without marks) makes a dataset look "
               "bigger than it is. A copy filed under two classes means one label is wrong. A copy in train and one "
               "in test lets a model score by memory, so test results look better than they are.")
    with st.expander("How duplicates are found", key="health_how"):
        st.markdown("Each image gets a *perceptual hash*: a 64-bit fingerprint of its coarse shapes that survives "
                    "resizing, re-compression and small edits. Two images whose fingerprints differ in at most the "
                    "number of bits below are candidates. A candidate counts only if it is closer than two "
                    "unrelated images of *this* dataset could be by chance, by its fingerprint or by its pixels: "
                    "small or look-alike images (28-pixel chest X-rays all look alike at this scale, and so do "
                    "pictures of one lesion on plain tissue wherever two lesions sit in one place) would "
                    "otherwise chain thousands of different pictures into one group. Chains of near-duplicates "
                    "form one group. Fingerprints and pixels are compared in gray levels, so two colour pictures "
                    "of one layout in different colours (a brown and a red lesion, centred on skin) can be "
                    "matched: look at a group's pictures below before you act on it.")
        max_distance = st.slider("Bits that may differ (of 64)", 0, 16, DEFAULT_MAX_DISTANCE, key="health_distance",
                                 help=f"{DEFAULT_MAX_DISTANCE} is the default, also used by 'Keep near-duplicates in "
                                      "one split': on BUSI every pair up to 10 bits apart was the same scan.")
        verdict = st.empty()
    health = _check(spec, max_distance)
    if health is None:
        return
    verdict.caption(health.describe_check())
    _summary(spec, health, current_data_config())
    if health.groups:
        _groups(spec, health)


def _check(spec: DatasetSpec, max_distance: int) -> HealthReport | None:
    checked_key = f"health_checked_{spec.root}"  # not its fingerprint, which reads every file before it is asked
    if len(spec.items) > HEALTH_AUTO_LIMIT and not st.session_state.get(checked_key):
        st.info(f"{len(spec.items):,} images: the first check reads every image and takes a while.")
        if st.button("Check for duplicates", key="health_start"):
            st.session_state[checked_key] = True
            st.rerun()
        return None
    bar = st.progress(0.0, text="Fingerprinting the images…")
    health = check_duplicates(spec, max_distance, progress=lambda done, total: bar.progress(
        done / max(total, 1), text=f"Fingerprinting the images: {done:,} of {total:,}"))
    bar.empty()
    return health


def _summary(spec: DatasetSpec, health: HealthReport, data_cfg: DataConfig) -> None:
    leak = split_leak(health.group_of, [it.split for it in spec.items])
    own = made_own_split(spec)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Duplicate groups", len(health.groups), help="Sets of two or more images that are the same picture.")
    c2.metric("Redundant images", health.redundant_images, help="Images that could go while keeping one of each group.")
    c3.metric("Label conflicts", len(health.conflicts), help="Groups whose images carry different classes.")
    c4.metric("Test images with a copy in train", f"{leak.test_in_train:,.0f} of {leak.test_images:,.0f}")
    if health.conflicts:
        group = next((g for g in health.conflicts if g.identical), health.conflicts[0])  # exact copies convince most
        example = " = ".join(f"{item_name(it.path)} ({spec.classes[it.label]})" for it in group.conflict_example())
        n = len(health.conflicts)
        st.error(f"**{'One picture appears' if n == 1 else f'{n} pictures appear'} under two or more classes**, e.g. "
                 f"{escape_markdown(example)}. The same image cannot be both: one label is wrong, or the case is "
                 "ambiguous. Check these labels, or remove the images.")
    if leak.test_in_train or leak.val_in_train or leak.test_in_learning:
        fix = ""
        if own and not data_cfg.group_duplicates:
            fix = " Tick **Keep near-duplicates in one split** in the sidebar for a split without leaks."
        st.warning(f"{_leak_words(leak)}{fix}")
        if not own:  # the dataset's own split leaks: offer a split that keeps copies together
            st.button("Make a duplicate-grouped split of this data (sets the dataset's split aside)",
                      key="health_fix_split", on_click=_grouped_split, type="primary",
                      help="Turns on 'Make my own split' and 'Keep near-duplicates in one split' in the sidebar: "
                           "a stratified split in which every copy of an image lands in the same split. Runs "
                           "trained then are tested on images they have never seen in any form.")
    elif health.groups:
        kept = " (near-duplicates are kept in one split)" if own and data_cfg.group_duplicates else ""
        st.success(f"No test or validation image has a near-duplicate in train{kept}.")
    else:
        st.success(f"No duplicate images found among {health.checked:,} images.")

    if health.groups:  # without a single copy every count below is 0, which the line above has said
        _leak_caption(health, spec, data_cfg, leak, own)
    for path, reason in health.failures[:5]:
        st.caption(f"Not checked: {escape_markdown(item_name(path))}: {shown(reason)}")


def _leak_caption(health: HealthReport, spec: DatasetSpec, data_cfg: DataConfig, leak: Leak, own: bool) -> None:
    """This split's leak against a random split's, in numbers."""
    train_share = 1 - data_cfg.val_fraction - data_cfg.test_fraction
    random_leak = random_split_leak(health.group_of, [it.label for it in spec.items], data_cfg.val_fraction,
                                    data_cfg.test_fraction)
    whose = "this split (made by medcls)" if own else "this dataset's own split"
    note = ("" if own or not data_cfg.group_duplicates else
            " The dataset brings its own split, so 'Keep near-duplicates in one split' changes nothing here unless "
            "'Make my own split' is on too.")
    expected = round(random_leak.test_in_train)
    st.caption(f"Leak of {whose}: {leak.test_in_train:,.0f} test and {leak.val_in_train:,.0f} validation images with a "
               f"near-duplicate in train, {leak.test_in_val:,.0f} test images with one in validation. With a random "
               f"{train_share:.0%}/{data_cfg.val_fraction:.0%}/{data_cfg.test_fraction:.0%} split, about "
               f"{expected:,} test image{'' if expected == 1 else 's'} would have a near-duplicate in train (average "
               f"of 5 seeds).{note}")


def _leak_words(leak: Leak) -> str:
    """The split leak in words, claiming only what it inflates: copies of validation images alone inflate the
    validation score (and so the epoch chosen by it), not the test score; fold or bagged models (the default for
    a small dataset) learn from the validation images too, so copies of test images there count for them."""
    def images(n: float, what: str) -> str:
        return f"{n:,.0f} {what} image{'' if n == 1 else 's'}"

    def have(n: float) -> str:
        return "has" if n == 1 else "have"

    if leak.test_in_train:
        test = f"{leak.test_in_train:,.0f} of {leak.test_images:,.0f} test images ({leak.test_share:.0%})"
        also = f" and {images(leak.val_in_train, 'validation')}" if leak.val_in_train else ""
        text = (f"**Split leak: {test}{also} {have(leak.test_in_train + leak.val_in_train)} a near-duplicate in "
                "train.** Test scores on this split are optimistic.")
    elif leak.val_in_train:
        text = (f"**Split leak: {images(leak.val_in_train, 'validation')} {have(leak.val_in_train)} a "
                "near-duplicate in train** (no test image has). Validation scores (and a best epoch picked by "
                "them) are optimistic.")
    else:
        text = "**Split leak:** no test or validation image has a near-duplicate in train."
    if leak.test_in_learning > leak.test_in_train:
        n = leak.test_in_learning
        text += (" Fold or bagged models (the default for a small dataset) learn from the validation images too: "
                 f"{n:,.0f} of the {leak.test_images:,.0f} test images {have(n)} a near-duplicate among train + "
                 "validation.")
    return text


def _grouped_split() -> None:
    """Button callback: the sidebar's own-split and keep-copies-together options on (before the next run)."""
    st.session_state["data_own_split"] = True
    st.session_state["data_group_duplicates"] = True


def _groups(spec: DatasetSpec, health: HealthReport) -> None:
    number = {id(g): i + 1 for i, g in enumerate(health.groups)}
    default = 0 if health.conflicts else 1 if health.leaks else 2
    view = st.radio("Show", VIEWS, index=default, horizontal=True, key="health_view")
    chosen = {"Label conflicts": health.conflicts, "Across splits": health.leaks, "All groups": health.groups}[view]
    if not chosen:
        st.caption("None.")
        return
    st.dataframe(pd.DataFrame([{
        "group": number[id(g)], "images": len(g.items), "kind": _kind(g),
        "classes": ", ".join(spec.classes[k] for k in g.labels), "splits": ", ".join(g.splits),
        "files": ", ".join(item_name(it.path) for it in g.items)} for g in chosen]), hide_index=True, width="stretch",
        placeholder="–")
    for group in chosen[:GROUPS_SHOWN]:
        with st.container(border=True):
            flags = (" · ⚠️ different classes" if group.conflict else "") + \
                    (" · ↔ across splits" if group.leak else "")
            st.markdown(f"**Group {number[id(group)]}** · {_kind(group)}{flags}")
            first = group.conflict_example() if group.conflict else []  # the copies whose labels differ first
            members = first + [it for it in group.items if it not in first]
            for col, item in zip(st.columns(THUMBS_PER_GROUP), members[:THUMBS_PER_GROUP]):
                try:
                    col.image(thumbnail(item.path, 120), width="stretch",
                              caption=escape_markdown(f"{item_name(item.path)[:24]} · {spec.classes[item.label]} · "
                                                      f"{item.split}"))
                except ValueError as exc:
                    col.caption(f"unreadable: {shown(exc)}")
            if len(group.items) > THUMBS_PER_GROUP:
                st.caption(f"…and {len(group.items) - THUMBS_PER_GROUP} more in this group (see the table).")
    if len(chosen) > GROUPS_SHOWN:
        st.caption(f"Thumbnails of the first {GROUPS_SHOWN} groups; the table lists all {len(chosen)}.")


def _kind(group: DuplicateGroup) -> str:
    return "exact copies" if group.identical else "near-duplicates"
