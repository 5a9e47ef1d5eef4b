"""The typed, frozen configuration of a run.

One ``TrainConfig`` describes a whole run: the data, the model and its own options,
augmentation and the optimisation recipe. It is saved with every run as
``config.json`` and loads back identically (``TrainConfig.from_dict(cfg.to_dict()) == cfg``).

Every field is declared once with :func:`~medcls.config.options.option`: a default,
a plain-language reason, a label, a form group, bounds, and when it applies. A
model's own options (the CNN's architecture, ResNet's weights and fine-tuning) are
declared by the model in the registry and live in ``model_options``. Options that do
not apply (momentum without SGD, StepLR's settings under one-cycle) are kept at their
defaults and are not saved.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .options import MAX_SEED, ConfigError, check_fields, option, when
from .serialize import CONFIG_FORMAT, build, coerce, migrate
from .table import MODEL_SECTION, option_spec, option_table

__all__ = ["DataConfig", "AugmentConfig", "TrainConfig", "IMBALANCE_STRATEGIES", "SELECT_METRICS", "SCHEDULERS",
           "OPTIMIZERS", "MAX_OVERSAMPLE"]

IMBALANCE_STRATEGIES = ("none", "oversample", "weighted_loss", "weighted_sampler")
SELECT_METRICS = ("accuracy", "macro_f1", "balanced_accuracy", "focus_recall")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "step", "cosine", "onecycle")
CHECKPOINTS = ("best", "last")
MAX_OVERSAMPLE = 1000.0  # a class repeated more often than this would swamp an epoch
MIN_IMAGE_SIZE = 16      # below this the networks' poolings leave too little of an image


def _model_names() -> tuple[str, ...]:
    from ..models import list_models

    return tuple(list_models())


@dataclass(frozen=True)
class DataConfig:
    source: str = option("", "Which images to learn from: leave empty for the built-in synthetic phantoms, or "
                         "give a folder, a manifest .csv (path,label[,split]) or an .npz file of arrays.",
                         label="Dataset", group="Data", flags=("--data", "--source"), sweepable=False,
                         words=(("", "the built-in phantoms"),))
    layout: str = option("auto", "How the dataset is organised. 'auto' looks at the folder: train/val/test "
                         "sub-folders, class sub-folders, a manifest or an .npz file.", label="Layout", group="Data",
                         choices=("auto", "split_folders", "class_folders", "manifest", "npz"), sweepable=False,
                         words=(("auto", "found automatically"), ("split_folders", "train/val/test folders"),
                                ("class_folders", "one folder per class"), ("manifest", "a manifest .csv"),
                                ("npz", "a MedMNIST .npz file")))
    class_aliases: tuple[str, ...] = option((), "Other names for the same class, written alias=class. "
                                            "Example: malignant=cancer when the test folder says 'malignant' "
                                            "and the training folder says 'cancer'.", label="Class aliases",
                                            group="Data", sweepable=False)
    class_names: tuple[str, ...] = option((), "Class names for .npz files, in label order (0, 1, 2, ...). "
                                          "Empty: MedMNIST's names when known, otherwise class_0, class_1, ...",
                                          label="Class names", group="Data", sweepable=False)
    val_fraction: float = option(0.15, "Share of images held out for validation when the data has no split "
                                 "of its own. Validation shows over-fitting in the curves, and picks the best "
                                 "epoch when 'Checkpoint kept' says so (0: none; a run then keeps its last "
                                 "epoch).",
                                 label="Validation share",
                                 group="Data", min=0.0, max=0.5, sweepable=False)
    test_fraction: float = option(0.15, "Share of images held out for the final test when the data has no "
                                  "split of its own. Test images are never seen during training.",
                                  label="Test share", group="Data", min=0.0, max=0.5, sweepable=False)
    split_seed: int = option(0, "Random seed of the train/val/test split, so the same images land in the "
                             "same split every time.", label="Split seed", group="Data", min=0, max=MAX_SEED,
                             sweepable=False)
    group_duplicates: bool = option(False, "Keep near-duplicate images in the same split (train, val or test), "
                                    "so a copy of a test image can never be learned in training.",
                                    label="Keep near-duplicates in one split", group="Data", sweepable=False)
    group_subfolders: bool = option(False, "Keep the images of each subfolder below a class folder, of each folder "
                                    "a .csv manifest's paths name (one per patient or study, as medical data is "
                                    "often stored), or of each patient its patient_id (lesion_id, ...) column names "
                                    "in the same split, so a patient the model learned from is never the one it is "
                                    "tested on. A class whose images all sit in one folder is split image by image.",
                                    label="Keep subfolders in one split", group="Data", sweepable=False)
    own_split: bool = option(False, "Set the dataset's own train/val/test split aside and make a new one "
                             "(stratified and seeded; with 'Keep near-duplicates in one split', copies of an image stay "
                             "together). For a given split that leaks copies of test images into train.",
                             label="Make my own split", group="Data", sweepable=False)
    include_masks: bool = option(False, "Also use files named *_mask*. These are usually segmentation masks, "
                                 "not images to classify, so they are skipped by default.",
                                 label="Include mask files", group="Data", sweepable=False)
    color: str = option("auto", "Channels the images are turned into. 'auto' uses grayscale when nearly all "
                        "images are gray (ultrasound usually is): the decoded images take a third of the "
                        "memory, and the first layer a third of its work.",
                        label="Colour", group="Data", choices=("auto", "gray", "rgb"), sweepable=False,
                        words=(("auto", "auto (gray if nearly all are)"), ("gray", "grayscale"),
                               ("rgb", "colour (RGB)")))
    disk_cache: bool = option(True, "Keep decoded, resized images on disk so the next run starts instantly.",
                              label="Cache decoded images on disk", group="Data", sweepable=False)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError("Validation share + test share must leave at least 10% of the images for training.")
        for alias in self.class_aliases:
            if alias.count("=") != 1 or not all(part.strip() for part in alias.split("=")):
                raise ConfigError(f"Class alias {alias!r} must look like alias=class, e.g. malignant=cancer.")


_AUGMENTING = when(augment=True)


@dataclass(frozen=True)
class AugmentConfig:
    augment: bool = option(True, "Show the network slightly changed copies of the training images each epoch "
                           "(flips, small shifts, brightness). Helps a lot with few images. Never used for "
                           "validation or test.", label="Augmentation", group="Images and augmentation", sweep_order=6)
    hflip: bool = option(True, "Mirror images left-right at random (anatomy is roughly symmetric).",
                         label="Random left-right flips", group="Images and augmentation", applies=_AUGMENTING)
    vflip: bool = option(False, "Flip images upside down at random. Off for ultrasound: depth runs down the "
                         "image and shadows fall below lesions.", label="Random up-down flips",
                         group="Images and augmentation", applies=_AUGMENTING)
    rotate: float = option(10.0, "Largest random rotation, in degrees.", label="Max rotation (°)",
                           group="Images and augmentation", min=0.0, max=180.0, applies=_AUGMENTING)
    scale: float = option(0.10, "Largest random zoom in or out (0.1 = 10%).", label="Max zoom",
                          group="Images and augmentation", min=0.0, max=0.5, applies=_AUGMENTING)
    translate: float = option(0.05, "Largest random shift, as a share of the image size.", label="Max shift",
                              group="Images and augmentation", min=0.0, max=0.5, applies=_AUGMENTING)
    brightness: float = option(0.2, "Largest random brightness change (0.2 = 20%), like a different gain.",
                               label="Max brightness change", group="Images and augmentation", min=0.0, max=1.0,
                               applies=_AUGMENTING)
    contrast: float = option(0.2, "Largest random contrast change (0.2 = 20%).", label="Max contrast change",
                             group="Images and augmentation", min=0.0, max=1.0, applies=_AUGMENTING)

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def active(self) -> bool:
        """Whether any augmentation would change an image (on, with a flip or a non-zero amount)."""
        return self.augment and any((self.hflip, self.vflip, self.rotate, self.scale, self.translate,
                                     self.brightness, self.contrast))


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: str = option("small_cnn", "The network. small_cnn is fast on a CPU; seed_cnn and seed_cnn_bn are "
                        "the coursework's networks; resnet18 reuses features learned on ImageNet photos.",
                        label="Model", group="Model", flags=("--model",), choices=_model_names, sweep_order=3)
    # The chosen model's own typed options (e.g. CNNOptions); a dict or None is resolved on construction.
    model_options: Any = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    image_size: int = option(0, "Images are resized to this many pixels square. Larger shows more detail "
                             "but trains 3 to 4 times slower per doubling (the Train page measures your choice). "
                             "0 = chosen for the data: 128 px, or 192 px for a small dataset of images at least "
                             "192 px on their shorter side that 'Ensemble for small datasets' trains as an "
                             "ensemble (then as 3 bagged models instead of 5 fold models: more detail, and each "
                             "learns from every image).",
                             label="Image size (px)", group="Images and augmentation", min=0, max=1024,
                             sweep=(64, 128), sweep_order=5, words=((0, "0 (chosen for the data)"),),
                             step=MIN_IMAGE_SIZE)  # from 0, + gives the smallest size, not 1 (any size can be typed)
    tta: bool = option(True, "Test-time augmentation: judge each validation/test image and its mirror image and "
                       "average the two answers. Usually a little more accurate; prediction takes twice as long.",
                       label="Mirror at test time (TTA)", group="Images and augmentation")
    epochs: int = option(20, "Passes over the training images. More epochs learn more but can overfit; the "
                         "last epoch's weights are kept (or the best validation epoch's: 'Checkpoint kept').",
                         label="Epochs", group="Learning", min=1,
                         max=1000, sweep=(10, 20), sweep_order=4)
    batch_size: int = option(32, "Images per training step. Larger is smoother but needs more memory.",
                             label="Batch size", group="Learning", min=1, max=4096, sweep=(16, 32), sweep_order=7)
    optimizer: str = option("adamw", "The rule that updates the weights. Adam/AdamW adapt the step size per "
                            "weight; SGD with momentum is the classic.", label="Optimizer", group="Learning",
                            choices=OPTIMIZERS, words=(("adam", "Adam"), ("adamw", "AdamW"), ("sgd", "SGD")))
    lr: float = option(2e-3, "Learning rate: how big each update step is. Too high and training jumps "
                       "around or diverges; too low and it learns slowly.", label="Learning rate",
                       group="Learning", gt=0.0, max=10.0, sweep=(5e-4, 2e-3), number_format="%.1e", sweep_order=2)
    weight_decay: float = option(1e-4, "Pulls weights gently towards zero, a mild guard against overfitting.",
                                 label="Weight decay", group="Learning", min=0.0, max=1.0, sweep=(0.0, 1e-4),
                                 number_format="%.1e", sweep_order=8)
    momentum: float = option(0.9, "How much of the previous step carries over (SGD's momentum).",
                             label="Momentum", group="Learning", min=0.0, max=0.999, applies=when(optimizer="sgd"))
    scheduler: str = option("onecycle", "How the learning rate changes over training: constant, step down "
                            "every few epochs (the seed's StepLR), cosine decay, or one-cycle (warm up, then "
                            "decay; usually fastest).", label="Learning-rate schedule", group="Learning",
                            choices=SCHEDULERS, words=(("none", "constant"), ("step", "step down (StepLR)"),
                                                       ("cosine", "cosine decay"), ("onecycle", "one-cycle")))
    step_size: int = option(3, "Lower the learning rate every this many epochs.", label="StepLR step (epochs)",
                            group="Learning", min=1, max=1000, applies=when(scheduler="step"))
    gamma: float = option(0.5, "Multiply the learning rate by this at each step.", label="StepLR factor",
                          group="Learning", gt=0.0, max=1.0, applies=when(scheduler="step"))
    ema_decay: float = option(0.99, "Keep a running average of the weights over the last steps and use the "
                              "average (0 = off). Smooths out the ups and downs of training on few images. The "
                              "decay warms up, so that the random starting weights fade out: the average covers "
                              "about the last ninth of the steps so far, until the decay set is reached (0.99, "
                              "about the last 100 steps, after 890 steps; 0.999 after 8,990).",
                              label="Weight averaging (EMA decay)",
                              group="Learning", min=0.0, max=0.9999, sweep=(0.0, 0.99), sweep_order=10)
    checkpoint: str = option("last", "Which weights the run keeps: the last epoch's, at the end of the "
                             "learning-rate schedule, or the epoch's with the best validation score (on a tie, the "
                             "lower validation loss; early stopping then applies). The last trains every epoch and "
                             "chooses nothing by the validation images, so their score stays a fair check; on a few "
                             "dozen validation images the best epoch is partly luck (cross-validated on BUSI, the "
                             "last found more malignant images: docs/ablation.md). A run without validation images "
                             "always keeps the last.", label="Checkpoint kept", group="Learning", choices=CHECKPOINTS,
                             sweep=("best", "last"), sweep_order=16, applies=when(bagged_models=0),
                             words=(("best", "the best validation epoch"), ("last", "the last epoch")))
    patience: int = option(5, "Stop early when the validation score has not improved for this many epochs, "
                           "but not before half of the epochs (0 = never stop early).",
                           label="Early-stopping patience", group="Learning", min=0, max=1000, sweep=(0, 5),
                           sweep_order=15, applies=when(checkpoint="best", bagged_models=0))
    folds: int = option(0, "Cross-validation: train this many models, each validated on a different part of the "
                        "training and validation images; you get every part's score and their mean ± spread (an "
                        "honest error bar for small datasets), and the models then predict together. Takes that many "
                        "times longer. 0 = one model.", label="Cross-validation folds", group="Learning", min=0,
                        max=10, sweepable=False, words=((0, "0 (none)"),))
    bagged_models: int = option(0, "Train this many models that each learn from every training and validation "
                                "image (with different seeds, to the end of the schedule) and let them predict "
                                "together. No image is held out, so there are no validation curves and no "
                                "cross-validation score: the test split is the only check. Cross-validated on BUSI, 3 "
                                "at 192 px beat 3 fold models by 2.5 points of macro-F1, for about 1.3 times the time "
                                "(docs/ablation.md). Takes that many times longer than one model. 0 = none asked for: "
                                "with Image size 0, a small dataset of images of at least 192 px trains 3 anyway "
                                "('Ensemble for small datasets').",
                                label="Bagged models", group="Learning", min=0, max=10, sweepable=False,
                                applies=when(folds=0), words=((0, "0 (none)"),))
    small_data_ensemble: bool = option(True, "With 0 folds: on a small dataset (enough of every class for each "
                                       "fold to be validated on 10 or more, at most 3,000 training and "
                                       "validation images, and at most as much work as 2,000 of them with "
                                       "small_cnn at 128 px: larger images or networks count for more, a frozen "
                                       "backbone with cached features far less), train 5 "
                                       "fold models anyway and let them predict together. On a few hundred "
                                       "images one model's luck matters; five models are steadier and learn from "
                                       "the validation images too. Takes 5 times as long. With Image size 0 and "
                                       "images of at least 192 px: 3 bagged models at 192 px instead (each "
                                       "learns from every image, none is validated), or 3 fold models when the "
                                       "run keeps its best epoch. Off: one model.",
                                       label="Ensemble for small datasets",
                                       group="Learning",
                                       applies=when(folds=0, bagged_models=0), sweepable=False)
    imbalance: str = option("oversample", "How to handle rare classes. Oversample repeats rare images; "
                            "weighted loss makes mistakes on rare classes cost more; a weighted sampler draws "
                            "classes equally often. Without one, a model can ignore a rare class such as "
                            "cancer and still look accurate.", label="Imbalance strategy", group="Rare classes",
                            choices=IMBALANCE_STRATEGIES, sweep=("none", "oversample"), sweep_order=1,
                            words=(("none", "none"), ("oversample", "oversampling"), ("weighted_loss", "weighted loss"),
                                   ("weighted_sampler", "weighted sampler")))
    oversample: tuple[str, ...] = option((), "Oversampling multipliers per class, e.g. malignant=16 benign=5 "
                                         "(the seed's style). Empty: repeat every class up to the largest; when that "
                                         "would draw over twice the training images an epoch, each epoch draws "
                                         "a balanced share of twice the training images.",
                                         label="Oversampling multipliers", group="Rare classes",
                                         applies=when(imbalance="oversample"), sweepable=False,
                                         words=(((), "none (every class up to the largest)"),))
    select_metric: str = option("macro_f1", "The validation score that picks the best epoch (on a tie, the "
                                "lower validation loss). Accuracy can look good while a rare class is missed; "
                                "macro-F1, balanced accuracy or the focus class's recall do not.",
                                label="Pick the best epoch by", group="Rare classes", choices=SELECT_METRICS,
                                sweepable=False, applies=when(checkpoint="best", bagged_models=0),
                                words=(("accuracy", "accuracy"), ("macro_f1", "macro-F1"),
                                       ("balanced_accuracy", "balanced accuracy"),
                                       ("focus_recall", "focus class recall")))
    focus_class: str = option("", "The class that matters most, e.g. malignant (missing a cancer costs more "
                              "than a false alarm). Empty: a class that names the finding (malignant, cancer, pneumonia, ...) when "
                              "present, else the rarest.",
                              label="Focus class", group="Rare classes", sweepable=False,
                              words=(("", "chosen for the data"),))
    seed: int = option(0, "Random seed: the same seed and settings give the same run on the same machine, when "
                       "it trains with the same number of CPU threads (set under CPU threads to be sure).",
                       label="Seed", group="Speed and reproducibility", min=0, max=MAX_SEED, sweep=(0, 1, 2),
                       sweep_order=14)
    precision: str = option("auto", "Number format for training maths. bf16 is faster on some CPUs; 'auto' "
                            "measures both briefly and picks the faster.", label="Number format",
                            group="Speed and reproducibility", choices=("auto", "fp32", "bf16"),
                            words=(("auto", "auto (measured)"), ("fp32", "32-bit (fp32)"), ("bf16", "16-bit (bf16)")))
    channels_last: bool = option(True, "Memory layout that makes convolutions faster on CPUs.",
                                 label="Channels-last memory", group="Speed and reproducibility")
    threads: int = option(0, "CPU threads for training. 0 chooses: all cores, and in the app's training processes "
                          "one fewer while other programs keep a core busy (checked every second; two threads "
                          "sharing a busy core run slower than one). A change of threads changes the arithmetic "
                          "slightly, so fix the number to repeat a run exactly.", label="CPU threads",
                          group="Speed and reproducibility", min=0, max=256, sweepable=False)

    def __post_init__(self) -> None:
        check_fields(self)
        object.__setattr__(self, "model_options", _resolve_model_options(self.model, self.model_options))
        for item in self.oversample:
            name, _, factor = item.partition("=")
            try:
                ok = bool(name.strip()) and 1 <= float(factor) <= MAX_OVERSAMPLE
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(f"Oversampling entry {item!r} must look like class=factor with factor from 1 to "
                                  f"{MAX_OVERSAMPLE:g}, e.g. malignant=16.")
        if self.folds == 1:
            raise ConfigError("Cross-validation folds must be 0 (one model) or at least 2.")
        if self.bagged_models == 1:
            raise ConfigError("Bagged models must be 0 (none) or at least 2: one model trained on every image "
                              "predicts alone, so there is nothing to bag.")
        if self.folds and self.bagged_models:
            raise ConfigError(f"Choose either cross-validation folds ({self.folds}) or bagged models "
                              f"({self.bagged_models}), not both: set one of them to 0.")
        if 0 < self.image_size < MIN_IMAGE_SIZE:
            raise ConfigError(f"Image size must be 0 (chosen for the data) or at least {MIN_IMAGE_SIZE} px "
                              f"(got {self.image_size}).")
        _reset_inapplicable(self)

    # --- options by flat name ------------------------------------------
    def keeps_last(self) -> bool:
        """Whether the run keeps its last epoch's weights ('Checkpoint kept'), rather than its best validation
        epoch's."""
        return self.checkpoint == "last"

    def stopping_patience(self) -> int:
        """Early stopping's patience as trained: 0 (never) when the run keeps its last epoch."""
        return 0 if self.keeps_last() else self.patience

    def chosen_image_size(self) -> int:
        """The image size, which must have been chosen for the data when it is 0 (``autoplan.size_for_data``):
        everything that decodes images or builds a network at a size reads it here."""
        if not self.image_size:
            raise ValueError("The image size is still 0 (chosen for the data): choose it for the dataset first "
                             "(medcls.training.autoplan.size_for_data).")
        return self.image_size

    def flat(self) -> dict[str, Any]:
        """Every option this config has, by its own name: {'lr': 0.002, 'source': '', 'blocks': 6, ...}."""
        own = {f.name for f in dataclasses.fields(self.model_options)} if self.model_options is not None else set()
        out = {}
        for name, spec in option_table().items():
            if spec.section == "":
                out[name] = getattr(self, name)
            elif spec.section == MODEL_SECTION:
                if name in own:
                    out[name] = getattr(self.model_options, name)
            else:
                out[name] = getattr(getattr(self, spec.section), name)
        return out

    def applicable(self) -> dict[str, Any]:
        """The options that have an effect in this config, with their values (what is saved and compared)."""
        flat = self.flat()
        table = option_table()
        return {name: value for name, value in flat.items()
                if table[name].option.applies is None or table[name].option.applies.holds(flat)}

    def with_options(self, *, strict: bool = True, **options: Any) -> "TrainConfig":
        """A copy with options changed by their flat names: ``cfg.with_options(lr=1e-3, model='seed_cnn')``.

        A new ``model`` starts from that model's own option values. With ``strict``, an option that has no
        effect in the result (``momentum`` without SGD, ``blocks`` for resnet18) is refused with the reason.
        """
        table = option_table()
        unknown = sorted(set(options) - set(table))
        if unknown:
            raise ConfigError(f"Unknown option(s) {', '.join(map(repr, unknown))}. "
                              f"Known options: {', '.join(sorted(table))}.")
        values = {name: _coerced(name, value) for name, value in options.items()}
        cfg = self
        if "model" in values and values["model"] != self.model:
            cfg = dataclasses.replace(cfg, model=values["model"], model_options=None)
        sections: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name == "model":
                continue
            spec = table[name]
            if spec.is_model_option and name not in {f.name for f in dataclasses.fields(cfg.model_options)}:
                raise ConfigError(f"{spec.label} is not an option of {cfg.model}; it belongs to "
                                  f"{', '.join(spec.models)}.")
            sections.setdefault(spec.section, {})[name] = value
        top = dict(sections.pop("", {}))
        for section, changed in sections.items():
            top[section] = dataclasses.replace(getattr(cfg, section), **changed)
        result = dataclasses.replace(cfg, **top)
        if strict:
            applicable = result.applicable()
            for name in options:
                if name not in applicable:
                    from .describe import applies_text

                    raise ConfigError(f"{table[name].label} has no effect here: it applies only "
                                      f"{applies_text(table[name].option.applies)}. Leave it out, or change that "
                                      "first.")
        return result

    # --- serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready dicts, holding only the options that apply."""
        applicable = self.applicable()
        out: dict[str, Any] = {"format": CONFIG_FORMAT}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "model_options":
                out[f.name] = {k: _jsonable(v) for k, v in dataclasses.asdict(value).items() if k in applicable} \
                    if value is not None else {}
            elif dataclasses.is_dataclass(value):
                out[f.name] = {k: _jsonable(v) for k, v in dataclasses.asdict(value).items() if k in applicable}
            elif f.name in applicable:
                out[f.name] = _jsonable(value)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = migrate(data)
        legacy = bool(data.pop("_legacy", False))
        if legacy and isinstance(data.get("model_options"), dict):
            data["model_options"] = _declared_only(data.get("model", "small_cnn"), data["model_options"])
        return build(cls, data)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        try:
            return cls.from_dict(json.loads(text))
        except RecursionError:
            raise ConfigError("This config is nested too deeply to be a medcls config.") from None

    @classmethod
    def load(cls, path: Path | str) -> "TrainConfig":
        path = Path(path)
        if path.is_dir():
            hint = " (a run folder: use its config.json)" if (path / "config.json").is_file() else ""
            raise ConfigError(f"Config file {path} is a folder{hint}.")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"Config file {path} does not exist.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Config file {path} cannot be read: {exc}") from None
        try:
            return cls.from_json(text)
        except ConfigError:
            raise
        except ValueError as exc:  # not JSON, or a number JSON allows and Python will not read (10**5000)
            raise ConfigError(f"Config file {path} is not valid JSON: {exc}") from None


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _coerced(name: str, value: Any) -> Any:
    try:
        return coerce(option_spec(name).hint, value)
    except ConfigError as exc:  # say which option the bad text was for
        message = str(exc)
        # In words, for the form and the command line: "Hidden layer widths: expected a whole number, got 'x'."
        raise ConfigError(f"{option_spec(name).label}: {message[:1].lower()}{message[1:]}") from None


def _entry(model: str):
    from ..models import UnknownModelError, model_entry

    try:
        return model_entry(model)
    except UnknownModelError as exc:
        raise ConfigError(str(exc)) from None


def _resolve_model_options(model: str, options: Any) -> Any:
    entry = _entry(model)
    if options is None or isinstance(options, dict):
        return entry.make_options(options or {})
    if entry.options_type is None or not isinstance(options, entry.options_type):
        raise ConfigError(f"Model {model} takes {getattr(entry.options_type, '__name__', 'no options')}, "
                          f"not {type(options).__name__}.")
    return options


def _declared_only(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """A legacy config's model options without those another model declared (they never applied)."""
    entry = _entry(model)
    declared = {f.name for f in dataclasses.fields(entry.options_type)} if entry.options_type else set()
    return {k: v for k, v in options.items() if k in declared}


def _reset_inapplicable(cfg: TrainConfig) -> None:
    """Options that do not apply go back to their defaults, so configs that differ only there are equal."""
    flat = cfg.flat()
    table = option_table()
    resets: dict[str, dict[str, Any]] = {}
    model_defaults = _entry(cfg.model).make_options({})
    for name, value in flat.items():
        spec = table[name]
        if spec.option.applies is None or spec.option.applies.holds(flat):
            continue
        default = getattr(model_defaults, name) if spec.is_model_option else spec.default
        if value != default:
            resets.setdefault(spec.section, {})[name] = default
    for section, values in resets.items():
        if section == "":
            for name, value in values.items():
                object.__setattr__(cfg, name, value)
        else:
            object.__setattr__(cfg, section, dataclasses.replace(getattr(cfg, section), **values))
