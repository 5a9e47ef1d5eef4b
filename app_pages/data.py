"""Data explorer: counts, duplicates and leaks, samples, sizes, skipped files and an augmentation preview."""

import pandas as pd
import streamlit as st

from app.dataset import current_data_config, dataset_caption, load_current_dataset, typical_image_side
from app.form import saved_config
from app.health import duplicates_section
from app.text import escape_markdown, shown
from medcls.analysis.uncertainty import test_size_note
from medcls.data.explore import (
    augmentation_preview,
    image_properties,
    imbalance_sentence,
    sample_items,
    small_validation_note,
    squash_note,
    thumbnail,
)
from medcls.data.spec import item_name
from medcls.data.storage import high_bit_note, stored_by_class_note
from medcls.data.subfolders import subfolder_note
from medcls.figures.evaluation import class_counts_figure
from medcls.settings import redact_paths
from medcls.training.autoplan import pool_counts, resolve_image_size

st.title("🔎 Data explorer")
spec_config = current_data_config()
spec = load_current_dataset(spec_config)
if spec is None:
    st.stop()
st.markdown(dataset_caption(spec))
if spec.synthetic:
    st.info("These are **synthetic phantom images** made by medcls so the app works without patient data. "
            "Normal: layered speckled tissue. Benign: oval, smooth-edged, uniform lesion with a brighter band "
            "below. Malignant: irregular, spiky, taller-than-wide lesion with a dark shadow below.")

st.subheader("Class counts")
st.plotly_chart(class_counts_figure(spec.counts()), key="class_counts", width="stretch")
st.markdown(imbalance_sentence(spec, name=escape_markdown))
if note := small_validation_note(spec, name=escape_markdown):
    st.warning(note)
if note := test_size_note(spec.counts()["test"], name=escape_markdown):
    st.info(note, icon=":material/info:")

duplicates_section(spec)

st.subheader("Samples")
col1, col2, col3 = st.columns([2, 2, 1])
klass = col1.selectbox("Class", spec.classes, key="explore_class")
split = col2.selectbox("Split", ["all", "train", "val", "test"], key="explore_split")
count = col3.number_input("How many", 1, 48, 12, key="explore_count")
items = sample_items(spec, spec.classes.index(klass), None if split == "all" else split, int(count))
if not items:
    st.caption("No images of this class in this split.")
cols = st.columns(6)
for i, item in enumerate(items):
    with cols[i % 6]:
        try:
            st.image(thumbnail(item.path, 160), caption=escape_markdown(item_name(item.path)[:28]), width="stretch")
        except ValueError as exc:
            st.caption(f"unreadable: {shown(exc)}")

train_cfg = saved_config(spec_config)  # the Train page's current options, at the size a run would choose
train_cfg = resolve_image_size(train_cfg, pool_counts(spec), typical_image_side(spec_config))[0]

st.subheader("Image sizes and modes")
props = image_properties(spec, limit=400)
if props:
    df = pd.DataFrame(props)
    c1, c2 = st.columns(2)
    c1.dataframe(df.groupby(["width", "height"]).size().rename("images").reset_index()
                 .sort_values("images", ascending=False), hide_index=True, width="stretch")
    c2.dataframe(df.groupby("mode").size().rename("images").reset_index(), hide_index=True, width="stretch")
    if len(spec.items) > len(props):
        st.caption(f"From a sample of {len(props):,} of {len(spec.items):,} images.")
    if note := squash_note(props, train_cfg.image_size, of=len(spec.items)):
        st.info(f"📐 {note} The augmentation preview below shows an image as the network sees it.")
    if note := high_bit_note(props, of=len(spec.items)):
        st.info(escape_markdown(note), icon=":material/contrast:")
    if note := stored_by_class_note(props):
        st.warning(escape_markdown(note), icon=":material/warning:")

st.subheader("Data report")
report = spec.report
if report.skipped:
    st.warning("One file was skipped and will not be used:" if len(report.skipped) == 1
               else f"{len(report.skipped)} files were skipped and will not be used:")
    st.dataframe(pd.DataFrame([{"file": redact_paths(s.path), "reason": redact_paths(s.reason)}
                               for s in report.skipped]),
                 hide_index=True, width="stretch", placeholder="–")
else:
    st.success("No unreadable or skipped files found while listing the dataset.")
for warning in report.warnings:
    st.warning(shown(warning))
if note := subfolder_note(spec):
    st.warning(shown(note), icon=":material/folder_shared:")
for note in report.notes:
    st.caption(shown(note))

st.subheader("Augmentation preview")
st.caption("One training image as the network may see it in different epochs, with the augmentation settings "
           "of the Train page. Validation and test images are never augmented.")
train_items = [it for it in spec.items if it.split == "train"] or spec.items
pick = st.slider("Training image (number)", 0, max(0, len(train_items) - 1), 0, key="aug_pick",
                 help="Which training image to preview; its name and class are shown below.")
picked = train_items[pick]
st.caption(f"Image {pick + 1:,} of {len(train_items):,}: **{escape_markdown(item_name(picked.path))}**, class "
           f"**{escape_markdown(spec.classes[picked.label])}** ({picked.split})")
try:
    draws = augmentation_preview(train_items[pick].path, train_cfg.augment, size=train_cfg.image_size, draws=6,
                                 seed=st.session_state.get("aug_seed", 0))
except ValueError as exc:  # ImageReadError: a file that lists fine but cannot be decoded (training skips it)
    st.warning(f"Cannot preview this image: {shown(exc)}. Pick another one; training skips this file.")
    draws = []
if st.button("🎲 New draws", key="aug_redraw"):
    st.session_state["aug_seed"] = st.session_state.get("aug_seed", 0) + 1
    st.rerun()
cols = st.columns(len(draws)) if draws else []
for i, (col, img) in enumerate(zip(cols, draws)):
    col.image(img, caption="original" if i == 0 else f"draw {i}", width="stretch")
