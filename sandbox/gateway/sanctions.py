"""Sanctions name screening: fuzzy matching (rapidfuzz) against the synthetic watch list."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from rapidfuzz import fuzz, process

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise_name(name: str) -> str:
    """Case, accents, punctuation and word order noise removed: 'Borýs  WEXLANOW.' → 'borys wexlanow'."""
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return _NON_WORD.sub(" ", ascii_only).strip()


@dataclass(frozen=True)
class WatchListMatch:
    entity_id: str
    listed_name: str  # the listed name or alias that matched
    primary_name: str
    score: float


class WatchList:
    """Every name and alias of every entity, normalised once; one query is one extractOne."""

    def __init__(self, entities: list[dict], version: str) -> None:
        self.version = version
        self._choices: list[str] = []
        self._meta: list[tuple[str, str, str]] = []  # (entity id, listed name, primary name)
        for entity in entities:
            for listed in [entity["name"], *entity.get("aliases", [])]:
                self._choices.append(normalise_name(listed))
                self._meta.append((entity["id"], listed, entity["name"]))
        self._cached_best = lru_cache(maxsize=4096)(self._best)

    @classmethod
    def load(cls, path: Path) -> WatchList:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return cls(data["entities"], str(data["version"]))

    def best_match(self, name: str, cutoff: float) -> WatchListMatch | None:
        """The closest listed name scoring at least `cutoff` (0-100), or None."""
        return self._cached_best(name, cutoff)

    def _best(self, name: str, cutoff: float) -> WatchListMatch | None:
        query = normalise_name(name)
        if not query:
            return None
        # token_sort_ratio: word order does not matter ('Zhaolinsky Tiegang' = 'Tiegang Zhaolinsky').
        found = process.extractOne(query, self._choices, scorer=fuzz.token_sort_ratio,
                                   score_cutoff=cutoff)
        if found is None:
            return None
        _choice, score, index = found
        entity_id, listed, primary = self._meta[index]
        return WatchListMatch(entity_id, listed, primary, round(score, 1))
