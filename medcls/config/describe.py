"""Configs in words: values as people read them, when an option applies, and how two configs differ.

Labels come from each option's declaration, so the Train form, the Sweeps picker,
the Compare page's "what differs" and the run card all say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .options import Condition
from .table import option_spec, option_table

if TYPE_CHECKING:
    from .schema import TrainConfig

__all__ = ["format_value", "label", "sentence_label", "applies_text", "Difference", "differences",
           "describe_differences", "settings_rows"]


def format_value(value: Any, name: str | None = None) -> str:
    """A setting's value as people read it: on/off, 0.002 (not 0.0020000000000000000), '–' for empty, and a
    choice in its declared words when the option ``name`` is given ('macro-F1', not 'macro_f1')."""
    if name is not None:
        table = option_table()
        word = table[name].option.word(value) if name in table else None
        if word is not None:
            return word
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ", ".join(map(str, value)) or "–"
    if value == "":
        return "–"
    return str(value)


def label(name: str) -> str:
    """The option's label as declared: 'Learning rate', 'Conv blocks'."""
    return option_spec(name).label


def sentence_label(name: str) -> str:
    """The label inside a sentence: 'learning rate', but 'TTA' and 'StepLR step' keep their capitals."""
    text = label(name)
    return text if len(text) > 1 and text[1].isupper() or text.startswith("StepLR") else text[:1].lower() + text[1:]


def applies_text(condition: Condition | None) -> str:
    """'when Optimizer is sgd', 'when Augmentation is on' ('always' without a condition)."""
    if condition is None:
        return "always"
    parts = []
    for name, allowed in condition.requirements:
        values = " or ".join(format_value(v, name) for v in allowed)
        parts.append(f"{sentence_label(name)} is {values}")
    return "when " + " and ".join(parts)


@dataclass(frozen=True)
class Difference:
    name: str
    label: str
    before: Any
    after: Any

    def words(self) -> str:
        return (f"{sentence_label(self.name)} {_value_words(self.before, self.name)} → "
                f"{_value_words(self.after, self.name)}")


NOT_USED = object()  # a Difference's side where the option has no effect


def _value_words(value: Any, name: str) -> str:
    return "not used" if value is NOT_USED else format_value(value, name)


def differences(a: "TrainConfig", b: "TrainConfig") -> list[Difference]:
    """The options that differ between two configs, among those that have an effect in both, and those that have an
    effect in only one of them with a value set there (its side reads "not used" on the other; :data:`NOT_USED`).

    A model's own option that applies in only one of them (ResNet's fine-tuning against a CNN) is part of the
    difference in the option that decides it (the model), so it is not listed again; nor is an option left at its
    default where it applies. So 3 bagged models against 3 fold models read "cross-validation folds 0 (none) → 3,
    bagged models 3 → not used", not as if one run had no ensemble.
    """
    va, vb = a.applicable(), b.applicable()
    found = []
    for name, spec in option_table().items():
        if name in va and name in vb:
            if va[name] != vb[name]:
                found.append(Difference(name, spec.label, va[name], vb[name]))
        elif (name in va or name in vb) and not spec.is_model_option:  # it has an effect in one of them
            value = va[name] if name in va else vb[name]
            if value != spec.default:
                found.append(Difference(name, spec.label, va.get(name, NOT_USED), vb.get(name, NOT_USED)))
    return found


def describe_differences(a: "TrainConfig", b: "TrainConfig") -> str:
    """'conv blocks 4 → 3, batch norm off → on' (a → b); 'same settings' when nothing differs."""
    parts = [d.words() for d in differences(a, b)]
    return ", ".join(parts) if parts else "same settings"


def settings_rows(cfg: "TrainConfig", *, include_data: bool = True) -> list[dict[str, str]]:
    """Every option that applies, in words, grouped as on the form (for the run card and tables)."""
    table = option_table()
    rows = []
    for name, value in cfg.applicable().items():
        spec = table[name]
        if spec.section == "data" and not include_data:
            continue
        rows.append({"group": spec.option.group, "setting": spec.label, "value": format_value(value, name)})
    return rows
