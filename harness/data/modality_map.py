"""Map free-text series descriptions to canonical modality names.

Real collections name the same contrast many ways ("AX T1 POST GD", "T1post", "t1ce").
Adapters ask one :class:`ModalityMap` so that the rules live in one place and a user can
fix a site's naming with a few overrides instead of renaming files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from harness.data.cohort import MODALITIES
from harness.errors import HarnessError

#: Ordered (substring, modality) rules; the first rule whose pattern occurs in the
#: lower-cased description wins. Order matters: "mask" before anything else, post-contrast
#: T1 and "dT1" before plain "t1", "flair" before "t2" ("T2 FLAIR" is a FLAIR).
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("masktumor", "MASK"),
    ("mask", "MASK"),
    ("seg", "SEG"),
    ("dt1", "dT1"),
    ("t1post", "T1post"),
    ("t1ce", "T1post"),
    ("post", "T1post"),
    ("+c", "T1post"),
    ("gd", "T1post"),
    ("flair", "FLAIR"),
    ("adc", "ADC"),
    ("srcbv", "sRCBV"),
    ("nrcbv", "nRCBV"),
    ("ncbf", "nCBF"),
    ("t2", "T2"),
    ("t1", "T1"),
)


def _check_modality(pattern: str, modality: str | None) -> None:
    if modality is not None and modality not in MODALITIES:
        raise HarnessError(
            f"modality map: pattern {pattern!r} maps to unknown modality {modality!r}; "
            f"use one of {', '.join(MODALITIES)} (or null to ignore the series)"
        )


@dataclass(frozen=True)
class ModalityMap:
    """Case-insensitive, ordered substring rules from description to modality.

    A rule whose modality is ``None`` deliberately ignores matching series (e.g. a
    localizer) without reporting them as unknown.
    """

    rules: tuple[tuple[str, str | None], ...] = DEFAULT_RULES

    def __post_init__(self) -> None:
        for pattern, modality in self.rules:
            _check_modality(pattern, modality)

    def lookup(self, description: str) -> str | None:
        """The canonical modality for ``description``, or None when no rule matches."""
        matched, modality = self.match(description)
        return modality if matched else None

    def match(self, description: str) -> tuple[bool, str | None]:
        """(whether a rule matched, its modality); distinguishes "ignored" from "unknown"."""
        text = description.strip().lower()
        for pattern, modality in self.rules:
            if pattern.lower() in text:
                return True, modality
        return False, None

    def with_overrides(self, overrides: Mapping[str, str | None] | None) -> ModalityMap:
        """A new map whose user rules are tried before the current ones."""
        if not overrides:
            return self
        extra = []
        for pattern, modality in overrides.items():
            modality = modality or None
            _check_modality(pattern, modality)
            extra.append((str(pattern), modality))
        return ModalityMap(tuple(extra) + self.rules)


def make_modality_map(
    overrides: ModalityMap | Mapping[str, str | None] | None = None,
) -> ModalityMap:
    """Accept what a caller (or a TOML config) has and return a :class:`ModalityMap`."""
    if isinstance(overrides, ModalityMap):
        return overrides
    return ModalityMap().with_overrides(overrides)
