"""Try it: one image through a trained model, with a check that the image is like its training data."""

import hashlib

import streamlit as st

from app.cell_images import HANDOVER
from app.dataset import MAX_UPLOAD_MB, current_fingerprint, load_current_dataset, upload_too_large
from app.identity import visible_runs
from app.manager import manager
from app.text import escape_markdown, shown
from medcls.analysis.metrics import probability_percent
from medcls.data import IMAGE_FORMATS, IMAGE_SUFFIXES, ImageReadError
from medcls.data.explore import detail_note, model_view_caption, thumbnail
from medcls.data.spec import item_name
from medcls.figures.evaluation import probability_figure
from medcls.inference.gradcam import coarse_map_note, ensemble_note, gradcam_overlay
from medcls.inference.predictor import LOW_CONFIDENCE, load_predictor
from medcls.inference.seen import LearnedFrom, Lookalikes, learned_from, lookalikes, near_copy_sentence, seen_sentence
from medcls.runs.choice import preferred_run, run_label
from medcls.runs.naming import display_names
from medcls.runs.store import RunNotFoundError, RunStore

MAX_IMAGE_MB = 20
PICK = "Pick one from the current dataset"
SPLIT_WORDS = {"test": "test images", "val": "validation images", "train": "training images"}


@st.cache_data(max_entries=16, show_spinner=False)
def _learned_from(root: str, run_id: str, weights_version: int) -> LearnedFrom:
    """The run's training and validation files (paths and sizes), read once per run and weights."""
    return learned_from(RunStore(root), run_id)


@st.cache_data(max_entries=4, show_spinner="Comparing with the images this run learned from (once per run)…")
def _lookalikes(root: str, run_id: str, weights_version: int) -> Lookalikes | None:
    """Fingerprints of the run's training and validation images, to name a near copy of the image tried."""
    return lookalikes(_learned_from(root, run_id, weights_version))


st.title("🖼️ Try it")
st.warning("**Teaching tool, not a diagnosis.** These models are small, trained on few images, and have not been "
           "validated for any clinical use.", icon="⚠️")
store = manager().store
summaries = {s.run_id: s for s in visible_runs(store.list()) if s.has_weights and not s.active and not s.damaged}
if not summaries:
    st.info("No trained model yet. Train one on the **Train** page first.")
    st.stop()
if st.session_state.get("try_run") and st.session_state["try_run"] not in summaries:
    st.info(f"Run {st.session_state['try_run']} no longer exists (its folder was deleted); pick another model.")
    del st.session_state["try_run"]
spec = load_current_dataset()
handed = st.session_state.pop(HANDOVER, None)  # "Open in Try it" under an image of Compare's confusion matrix
if handed and handed["run"] not in summaries:
    st.info(f"Run {handed['run']} cannot answer now (deleted, or training again); pick a model.")
    handed = None
if handed:
    st.session_state["try_run"] = handed["run"]
    st.session_state["try_source"] = PICK
    st.session_state["try_from_compare"] = handed  # stays offered while the session lasts
if "try_run" not in st.session_state:  # a fresh page: the best finished run on the dataset in the sidebar
    st.session_state["try_run"] = preferred_run(list(summaries.values()), current_fingerprint())
names = display_names(summaries.values())
run_id = st.selectbox("Model (run)", list(summaries), key="try_run",
                      format_func=lambda r: run_label(summaries[r], names[r]),
                      help="Runs that saved weights, newest first: name, the data it learned from, how it ended "
                           "and its test score. It starts at the best finished run on the dataset in the sidebar (a "
                           "stopped one if none finished there).")
chosen = summaries[run_id]
if chosen.state != "finished":
    st.caption(f"⚠️ This run did not finish ({escape_markdown(run_label(chosen))}): "
               f"{chosen.kept_words('answers', store.model_record(run_id))}.")
if spec is not None and chosen.data_fingerprint and chosen.data_fingerprint != current_fingerprint():
    st.caption(f"This model learned from **{escape_markdown(chosen.dataset)}**, not from the dataset in the "
               "sidebar.")
try:
    predictor = load_predictor(store, run_id)
except (RunNotFoundError, FileNotFoundError, ValueError) as exc:
    st.error(f"Cannot load this run: {shown(exc)}")
    st.stop()
st.caption(f"Classes: {', '.join(map(escape_markdown, predictor.classes))} · input {predictor.image_size} px "
           f"{predictor.color}")

source_kind = st.radio("Image", ["Upload an image", PICK], horizontal=True,
                       key="try_source")
data, name, true_class = None, None, None
if source_kind == "Upload an image":
    # The browser refuses files over the uploader's cap without telling the page, which would leave the previous
    # image's prediction on screen under the refused file; so the uploader takes up to the server's cap and this
    # page refuses (and clears the prediction) itself.
    upload = st.file_uploader(IMAGE_FORMATS, type=sorted(suffix[1:] for suffix in IMAGE_SUFFIXES),
                              key="try_upload", max_upload_size=MAX_UPLOAD_MB,
                              help=f"At most {MAX_IMAGE_MB} MB. The image is only used for this prediction.")
    if upload is not None:
        too_large = upload_too_large(upload.name, upload.size, MAX_IMAGE_MB)
        if too_large:
            st.error(f"Could not use **{escape_markdown(upload.name)}**: {shown(too_large)}")
            st.stop()
        data, name = upload.getvalue(), upload.name
else:
    # (path, true class) of the chosen split's images (test first: new to the model), plus an image sent from
    # Compare when it is not among them (its run learned from another dataset than the one in the sidebar).
    splits = [split for split in ("test", "val", "train") if spec and any(it.split == split for it in spec.items)]
    # Streamlit forgets a widget's value once it is not drawn (another split's picker, the upload choice); the
    # page keeps the last split and the image picked in each in a plain session key and gives them back.
    kept = st.session_state.setdefault("try_kept", {})
    if handed:
        st.session_state["try_split"] = splits[0] if splits else None  # Compare hands over test images
    elif st.session_state.get("try_split") not in splits:
        st.session_state["try_split"] = kept.get("split") if kept.get("split") in splits else (
            splits[0] if splits else None)
    if len(splits) > 1:
        st.radio("From the", splits, horizontal=True, key="try_split", format_func=SPLIT_WORDS.get,
                 help="Test images are new to the model: its answer on one shows how it does on new images. On an "
                      "image it learned from (training images; validation images too for fold or bagged models), "
                      "a right answer shows what it remembers, and the page says so.")
    chosen_split = st.session_state.get("try_split")
    choices = [(it.path, spec.classes[it.label]) for it in spec.items
               if it.split == chosen_split] if spec is not None else []
    sent = st.session_state.get("try_from_compare")
    if sent and sent["path"] not in {path for path, _ in choices}:
        choices.insert(0, (sent["path"], sent["true"]))
    # One picker per split: one picker whose options changed under it kept showing the old split's image name in
    # the browser while the page answered for the new split's first image.
    pick_key = f"try_pick_{chosen_split}"
    paths = [path for path, _ in choices]
    if handed:
        kept[chosen_split] = handed["path"]
        st.session_state.pop(pick_key, None)  # so that the picker starts at the image sent
    if choices:
        # The image picked before is given back as the picker's starting index, not through its session key: a
        # value set there outlives the picker, and the browser then showed the first image's name beside the
        # answer for the kept one.
        kept_index = paths.index(kept[chosen_split]) if kept.get(chosen_split) in paths else 0
        pick = st.selectbox("Image", range(len(choices)), key=pick_key, index=kept_index,
                            format_func=lambda i: f"{item_name(choices[i][0])} (true: {choices[i][1]})")
        (data, true_class), name = choices[pick], item_name(choices[pick][0])
        kept.update({"split": chosen_split, chosen_split: data})

if data is None:
    st.stop()
try:
    pixels = predictor.pixels(data, name=name)
    probs = predictor.probabilities(pixels)
except ImageReadError as exc:
    hint = f" Please upload a {IMAGE_FORMATS} image." if exc.kind == "not_image" else ""
    st.error(f"Could not use **{shown(name or exc.name)}**: {shown(exc.reason)}.{hint}")
    st.stop()

prediction = predictor.prediction(probs)
probabilities, label = prediction.probabilities, prediction.label
novelty = predictor.novelty(pixels)
weights_version = store.weights_version(run_id)
seen = _learned_from(str(store.root), run_id, weights_version)
learned = seen.split_of(path=data) if isinstance(data, str) else seen.split_of(data=data)
copy = None
if learned is None:  # not the same file: it may still be a copy of one (BUSI's split has copies of 45 test images)
    looks = _lookalikes(str(store.root), run_id, weights_version)
    copy = looks.near_copy(data) if looks is not None else None
left, right = st.columns([1, 2])
with left:
    st.image(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0),
             caption=model_view_caption(data, predictor.image_size), width="stretch")
    if copy is not None:  # the claim is a fingerprint's: show the match, so that people can judge it by eye
        try:
            st.image(thumbnail(copy.path, 320), width="stretch",
                     caption=f"the {copy.split} image it matches: {shown(item_name(copy.path))}")
        except ValueError:
            pass  # moved or unreadable since the run: the sentence names it
with right:
    st.metric("Predicted class", escape_markdown(label), f"{probability_percent(probabilities[label])} confidence",
              delta_color="off", delta_arrow="off")  # a confidence, not a change: no arrow
    if learned is not None:
        filed = (seen.labels or {}).get(learned[0])
        st.info(escape_markdown(seen_sentence(learned, seen.folds, filed, label, seen.chose_epoch, seen.bagged,
                                              seen.trained)), icon="🧠")
    elif copy is not None:
        own_label = true_class if true_class in predictor.classes else None  # another dataset's names say nothing
        st.info(escape_markdown(near_copy_sentence(copy, seen.folds, own_label, label, seen.chose_epoch,
                                                    seen.bagged, seen.trained)), icon="🧠")
    if true_class is not None and learned is None:  # a picked image: its label is known, so say what it means
        if true_class not in predictor.classes:
            st.caption(f"Filed as **{escape_markdown(true_class)}** in the dataset, a class this model does not know.")
        else:
            st.caption(f"{'✅' if label == true_class else '❌'} Filed as **{escape_markdown(true_class)}** in the "
                       f"dataset: the model's answer is {'right' if label == true_class else 'wrong'}.")
    if novelty is not None and novelty.unusual:
        st.warning(novelty.sentence(), icon="🛑")
    if (record := store.data_record(run_id)) and (detail := detail_note(data, record.typical_side,
                                                                      predictor.image_size)):
        st.caption(f"🔍 {escape_markdown(detail)}")
    if prediction.low_confidence:
        st.warning(f"Low confidence (under {LOW_CONFIDENCE:.0%}): the model is unsure; do not rely on this answer.")
    st.plotly_chart(probability_figure(probabilities), key="try_probs", width="stretch")
    if novelty is None:
        st.caption("This run was trained before medcls recorded its training images' features, so it cannot say "
                   "whether this image is like them. Train it again to get that check.")
    elif not novelty.unusual:
        st.caption(novelty.sentence())

st.subheader("Where did the model look?")
# A new image (or model) starts at its predicted class: the class picker belongs to the image it explains (its key
# names the image), so the map, the picker, the caption and the text always name the same class.
image_key = hashlib.blake2b(run_id.encode() + pixels.tobytes(), digest_size=8).hexdigest()
heat_left, heat_right = st.columns([1, 2])
with heat_right:
    explain = st.selectbox("Show the evidence for", predictor.classes, index=predictor.classes.index(label),
                           key=f"gradcam_class_{image_key}",
                           help="The heatmap shows which parts of the image raised the score of this class. Each new "
                                "image starts at the predicted class.")
    alpha = st.slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05, key="gradcam_alpha",
                      help="0 shows only the image, 1 only the heatmap.")
    explain_md = escape_markdown(explain)  # a class name is user-controlled text
    st.caption("Grad-CAM heatmap: red and yellow mark the regions that raised the score of "
               f"**{explain_md}** most, blue the regions that did not. It is coarse (it comes from the "
               "network's last, low-resolution layer) and it is not a segmentation. A hot spot on text, calipers or "
               "the image border is a warning sign that the model learned a shortcut instead of the tissue. "
               + ensemble_note(predictor.model))
    coarse = coarse_map_note(predictor.model, predictor.image_size)
    if coarse:
        st.warning(coarse)
with heat_left:
    try:
        overlay = gradcam_overlay(predictor, pixels, predictor.classes.index(explain), alpha)
    except (ValueError, NotImplementedError) as exc:
        st.error(f"No heatmap for this model: {shown(exc)}")
    else:
        st.image(overlay, caption=f"Grad-CAM for {explain_md} · opacity {alpha:.2f}", width="stretch")
