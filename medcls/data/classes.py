"""Class names: case-insensitive matching, aliases, and a helpful error when splits disagree.

The seed's data is the motivating case: ``train/`` and ``val/`` call the class
``cancer`` while ``test/`` calls it ``malignant``. With the alias
``malignant=cancer`` both become one class; without it, loading stops and the
error names the mismatched classes and the alias that would fix it.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from ..config import ConfigError
from .spec import DataError, class_word

__all__ = ["ClassResolver", "parse_aliases", "default_focus_class", "resolve_focus_class", "focus_note",
           "names_disease", "FOCUS_PATTERN"]

# Names that mean "the class we must not miss" in the datasets we target.
# Class names that say "this is the finding to catch" in common medical datasets: breast ultrasound, skin lesions,
# chest X-rays (pneumonia, COVID-19, tuberculosis), brain MRI (glioma, meningioma), malaria smears (parasitized);
# 'mel' alone is melanoma in the HAM10000 and ISIC sets' abbreviations.
FOCUS_PATTERN = re.compile(r"malig|cancer|carcinoma|tumou?r|melanoma|(?<![a-z])mel(?![a-z])|positive|abnormal|"
                           r"pneumonia|covid|tubercul|glioma|meningioma|parasiti", re.IGNORECASE)
# What makes such a name say the opposite: a healthy class anywhere in it, or a negation just before the finding
# ("non-cancer", "notumor", "no_tumor", "not malignant", "uninfected"-style "un").
_HEALTHY = re.compile(r"benign|(?<!ab)normal|healthy", re.IGNORECASE)
_NEGATED = re.compile(r"(?:^|[^a-z])(?:non|not?|un)[\s_-]?$", re.IGNORECASE)
# ... or a finding that only qualifies another tissue: PathMNIST's 'cancer-associated stroma' beside its tumour class,
# 'colorectal adenocarcinoma epithelium'.
_QUALIFIER = re.compile(r"^[a-z]*[\s_-]+(?:associated|adjacent|related)", re.IGNORECASE)


def _key(name: str) -> str:
    return " ".join(name.strip().casefold().split())


def parse_aliases(aliases: Iterable[str]) -> dict[str, str]:
    """{'malignant': 'cancer'} from ['malignant=cancer'] (keys and values case-folded)."""
    out: dict[str, str] = {}
    for entry in aliases:
        alias, _, target = entry.partition("=")
        if not alias.strip() or not target.strip():
            raise DataError(f"Class alias {entry!r} must look like alias=class, e.g. malignant=cancer.")
        out[_key(alias)] = _key(target)
    return out


class ClassResolver:
    """Maps raw folder or manifest labels to one canonical class name each."""

    def __init__(self, aliases: Iterable[str] = ()):
        self.aliases = parse_aliases(aliases)
        self._display: dict[str, str] = {}

    def _canonical_key(self, name: str) -> str:
        key = _key(name)
        return self.aliases.get(key, key)

    def canonical(self, name: str) -> str:
        """The display name of the class that ``name`` belongs to."""
        key = self._canonical_key(name)
        return self._display.get(key, name.strip())

    def resolve(self, names_by_split: Mapping[str, Iterable[str]]) -> list[str]:
        """Sorted class list; raises when val/test hold classes that train does not."""
        keys_by_split: dict[str, set[str]] = {}
        # Train's spelling wins for display ("Benign" in train shows as "Benign"); a class
        # known only through an alias shows under the alias target's name.
        ordered = sorted(names_by_split, key=lambda s: (s != "train", s))
        for split in ordered:
            for name in sorted(names_by_split[split]):
                if self._canonical_key(name) == _key(name):
                    self._display.setdefault(_key(name), name.strip())
        for split in ordered:
            keys_by_split[split] = {self._canonical_key(name) for name in names_by_split[split]}
            for key in keys_by_split[split]:
                self._display.setdefault(key, key)
        train = keys_by_split.get("train", set())
        for split, keys in keys_by_split.items():
            unknown = sorted(keys - train)
            if split != "train" and unknown:
                raise DataError(self._mismatch_message(split, keys, train, unknown))
        return sorted((self._display[k] for k in train), key=str.casefold)

    def _mismatch_message(self, split: str, keys: set[str], train: set[str], unknown: list[str]) -> str:
        missing = sorted(train - keys)
        lines = [f"Classes differ between splits: train has {', '.join(sorted(train))}; "
                 f"{split} has {', '.join(sorted(keys))}."]
        for name in unknown:
            lines.append(f"'{name}' (in {split}) is not a class in train.")
        if len(unknown) == 1 and len(missing) == 1:
            fix = f"{unknown[0]}={missing[0]}"
            lines.append(f"If '{unknown[0]}' means '{missing[0]}', add the class alias {fix} "
                         f"(command line: --class-aliases {fix}; app: sidebar > class aliases).")
        else:
            lines.append("Add class aliases written alias=class (e.g. malignant=cancer) so the names match.")
        return " ".join(lines)


def names_disease(name: str) -> bool:
    """Whether a class name names the finding to catch: 'malignant', 'melanoma', 'abnormal', 'PNEUMONIA',
    'glioma'; not 'non-cancer', 'notumor', 'benign tumour', 'cancer-associated stroma' or 'normal'."""
    found = FOCUS_PATTERN.search(name)
    return found is not None and not _HEALTHY.search(name) and not _NEGATED.search(name[:found.start()]) \
        and not _QUALIFIER.search(name[found.end():])


def default_focus_class(classes: list[str], train_counts: Mapping[str, int] | None = None) -> str:
    """The first class that names a finding to catch (malignant, cancer, pneumonia, ...: :func:`names_disease`),
    otherwise the rarest training class."""
    for name in classes:
        if names_disease(name):
            return name
    if train_counts:
        return min(classes, key=lambda c: (train_counts.get(c, 0), c))
    return classes[-1]


def resolve_focus_class(classes: list[str], chosen: str, train_counts: Mapping[str, int] | None = None) -> str:
    """The focus class a run uses: ``chosen`` (in any case) when given, else :func:`default_focus_class`."""
    chosen = chosen.strip()
    if not chosen:
        return default_focus_class(classes, train_counts)
    match = [c for c in classes if c.casefold() == chosen.casefold()]
    if not match:
        raise ConfigError(f"Focus class {chosen!r} is not in this dataset (classes: {', '.join(classes)}). Type "
                          "one of them under Rare classes, or leave it empty for the class that names the finding "
                          "(malignant, pneumonia, ...) or the rarest.")
    return match[0]


def focus_note(classes: list[str], chosen: str, train_counts: Mapping[str, int] | None = None) -> str:
    """Which class's recall a run on these classes tracks, and why, in a sentence (raises like
    :func:`resolve_focus_class`)."""
    focus = resolve_focus_class(classes, chosen, train_counts)
    if chosen.strip():
        return f"Here it is {class_word(focus)}, as chosen under Rare classes: its recall is tracked on every epoch."
    if names_disease(focus):
        return f"Here that is {class_word(focus)}: its recall is tracked on every epoch."
    return (f"These images have no such class, so the rarest, {class_word(focus)}, is the focus class whose recall is "
            "tracked on every epoch (choose another under Rare classes).")
