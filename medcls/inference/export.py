"""A run's model as a TorchScript file that predicts without medcls: torch + Pillow + numpy are enough.

The exported module takes what medcls feeds its models: uint8 images (N, C, S, S)
already decoded in the run's colour mode (gray: C = 1, rgb: C = 3) and resized to
the run's size S; it scales them to 0..1, normalises them (the model's own
normalisation is part of the model), averages the image and its mirror when the
run was tested that way (TTA), and returns class probabilities (N, K). It is the
same arithmetic as :func:`medcls.inference.proba.predict_proba`, traced in fp32.

Decoding and resizing stay in Python because the exact pixels matter: the
generated ``predict.py`` does them with Pillow and numpy the way
:mod:`medcls.data.imageio` does (JPEGs decoded at a reduced scale, 16-bit and
float images stretched to 8 bits, transparency on black, convert to L or RGB,
bilinear resize with ``reducing_gap=2.0``; DICOM files through medcls's own
DICOM reader when pydicom is installed), so its answers match medcls's own
to within rounding. The class names and input format travel inside the
TorchScript file (its ``extra_files``) and beside it as ``classes.json``.
"""

from __future__ import annotations

import inspect
import io
import json
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..analysis.metrics import probability_percent
from ..data import dicom
from ..data.imageio import HIGH_BIT_MODES, MAX_IMAGE_PIXELS, stretch_to_uint8
from ..models.ensemble import FoldEnsemble
from ..runs.store import RunStore
from .predictor import load_run_model

__all__ = ["ExportedModel", "export_torchscript", "torchscript_zip", "model_info", "PREDICT_PY", "INFO_FILE"]

INFO_FILE = "classes.json"
MODEL_FILE = "model.pt"


class ExportedModel(nn.Module):
    """uint8 (N, C, S, S) -> class probabilities (N, K), with the run's test-time mirror averaging.

    A cross-validation run's ensemble is exported as its fold models, whose probabilities are averaged as
    the ensemble does (the ensemble object itself cannot be traced: it has no single head).
    """

    def __init__(self, model: nn.Module, tta: bool):
        super().__init__()
        members = model.members if isinstance(model, FoldEnsemble) else [model]
        self.members = nn.ModuleList(members)
        self.tta = tta

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.softmax(m(x).float(), 1) for m in self.members]).mean(0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        probs = self._probs(x)
        if self.tta:
            probs = (probs + self._probs(x.flip(-1))) / 2
        return probs


def model_info(store: RunStore, run_id: str) -> dict:
    """What a user of the exported model needs: classes, input size and colour, TTA, where it came from."""
    record = store.model_record(run_id)
    if record is None:
        raise FileNotFoundError(f"Run {run_id!r} has no model yet (it has not started training).")
    return {"classes": list(record.classes), "image_size": record.image_size, "color": record.color,
            "channels": record.in_channels, "tta": record.tta, "run_id": run_id, "run_name": store.meta(run_id).name,
            "input": "uint8 tensor (N, channels, image_size, image_size): the image in 'color' mode (gray = Pillow "
                     "'L', rgb = 'RGB'), resized with Pillow's bilinear filter (reducing_gap=2.0)",
            "output": "class probabilities (N, len(classes)), in the order of 'classes'",
            "note": "A teaching model trained with medcls; it is not a diagnostic device."}


def export_torchscript(store: RunStore, run_id: str, folder: Path | str) -> Path:
    """Write ``model.pt`` (TorchScript), ``classes.json`` and ``predict.py`` into ``folder``; returns the folder."""
    model, record = load_run_model(store, run_id)
    info = model_info(store, run_id)
    wrapper = ExportedModel(model.float(), record.tta).eval()
    example = torch.zeros(2, record.in_channels, record.image_size, record.image_size, dtype=torch.uint8)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # torch 2.14 calls TorchScript deprecated (for torch.export), but it is what loads with torch alone.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info_text = json.dumps(info, indent=2)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, buffer, _extra_files={INFO_FILE: info_text})
    (folder / MODEL_FILE).write_bytes(buffer.getvalue())
    (folder / INFO_FILE).write_text(info_text + "\n", encoding="utf-8")
    (folder / "predict.py").write_text(PREDICT_PY, encoding="utf-8")
    return folder


def torchscript_zip(store: RunStore, run_id: str, workdir: Path | str) -> bytes:
    """The exported files as one .zip (``<run_id>-torchscript/...``), for a download button."""
    folder = export_torchscript(store, run_id, Path(workdir) / f"{run_id}-torchscript")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{folder.name}/{path.name}")
    return buffer.getvalue()


def _decoding_source() -> str:
    """medcls's own decoding constants and functions, as source for predict.py: the high-bit-depth stretch, the
    DICOM reader (module :mod:`medcls.data.dicom` without its imports) and the way the app writes a probability
    (never a certain 100%), not copies that could drift apart."""
    constants = {"HIGH_BIT_MODES": HIGH_BIT_MODES, "MAX_IMAGE_PIXELS": MAX_IMAGE_PIXELS,
                 "DICOM_SUFFIXES": dicom.DICOM_SUFFIXES, "_MAGIC": dicom._MAGIC, "_MAGIC_AT": dicom._MAGIC_AT,
                 "_NEEDS_PYDICOM": dicom._NEEDS_PYDICOM}
    functions = [probability_percent, stretch_to_uint8, dicom.DicomError, dicom.looks_like_dicom, dicom.is_dicom_file, dicom._dcmread,
                 dicom._single_image, dicom.read_dicom, dicom._gray, dicom._first]
    lines = [f"{name} = frozenset({sorted(value)!r})" if isinstance(value, frozenset) else f"{name} = {value!r}"
             for name, value in constants.items()]  # sorted: the same file from every export
    return "\n".join(lines) + "\n\n\n" + "\n\n\n".join(inspect.getsource(f).rstrip() for f in functions)


PREDICT_PY = '''"""Predict images with a model exported from medcls. Needs only torch, Pillow and numpy (and pydicom
for DICOM files).

    python predict.py IMAGE [IMAGE ...]          (add --json for one JSON line per image)

A teaching model: it is not a diagnostic device.
"""
from __future__ import annotations

import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

warnings.filterwarnings("ignore", category=FutureWarning)  # newer torch calls TorchScript deprecated
HERE = Path(__file__).resolve().parent
extra = {"classes.json": ""}
model = torch.jit.load(str(HERE / "model.pt"), map_location="cpu", _extra_files=extra).eval()
info = json.loads(extra["classes.json"])


MEDCLS_DECODING


def load(path):
    """The image as the model was trained on it: uint8 (1, C, S, S)."""
    size = info["image_size"]
    if is_dicom_file(path):  # shown as a viewer shows it (window, MONOCHROME1), as in medcls; needs pydicom
        try:
            img = read_dicom(path, MAX_IMAGE_PIXELS)
        except DicomError as exc:  # no pydicom, several frames, compressed without a decoder...: says why
            sys.exit(f"{path}: {exc}")
        except Exception as exc:  # a damaged file pydicom trips over
            sys.exit(f"{path}: the DICOM data is corrupt or truncated ({type(exc).__name__}: {exc})")
    else:
        img = Image.open(path)
        if img.format == "JPEG":  # decoded at a reduced scale that stays at least twice the size, as in medcls
            img.draft("L" if info["color"] == "gray" else "RGB", (2 * size, 2 * size))
        img.load()
        try:
            img = ImageOps.exif_transpose(img)  # phone/camera JPEGs store their rotation in EXIF
        except Exception:
            pass
    if img.mode in HIGH_BIT_MODES:  # 16-bit and float images, as medcls does
        img = Image.fromarray(stretch_to_uint8(np.asarray(img, dtype=np.float64)))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")  # transparent parts become black, as in medcls
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    img = img.convert("L" if info["color"] == "gray" else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = np.asarray(img, dtype=np.uint8)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return torch.from_numpy(np.array(pixels, dtype=np.uint8))[None]  # a writable copy


if __name__ == "__main__":
    as_json = "--json" in sys.argv
    for path in [a for a in sys.argv[1:] if a != "--json"]:
        with torch.no_grad():
            probs = model(load(path))[0].tolist()
        best = int(np.argmax(probs))
        if as_json:
            print(json.dumps({"image": path, "label": info["classes"][best],
                              "probabilities": dict(zip(info["classes"], probs))}))
        else:
            others = ", ".join(f"{c} {probability_percent(p)}" for c, p in zip(info["classes"], probs))
            print(f"{path}: {info['classes'][best]} ({others})")
'''.replace("MEDCLS_DECODING", _decoding_source())
