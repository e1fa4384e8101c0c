"""Sanctions screening against the synthetic watch list, the way the better name matchers do it.

Every name, listed or asked about, is first reduced to comparable keys:

- **a fingerprint** (OpenSanctions' `fingerprints`): any script transliterated to ASCII through
  ICU (Cyrillic, Greek, Arabic, Chinese, Latin diacritics), company forms folded to one short
  form ("Free Zone Establishment" and "F.Z.E." are both `fze`, "Limited" is `ltd`, "ООО" is
  `ooo`), punctuation and case gone. Other transliterations are tried as well, and the best
  kept: `anyascii`, and for Greek ICU's BGN/PCGN romanisation ("Μπόρις" is Boris, where the
  letter-by-letter default writes Mporis);
- **a compact form**: the ordered fingerprint without spaces, so "Zhao Linsiji Tiegang" meets
  赵林斯基·铁钢 (`zhao lin si ji tie gang`), whose syllables ICU writes apart;
- **a phonetic key** (jellyfish's metaphone per word): "Wexlanow" and "Vekslanov" sound alike.

A candidate's score starts from its **spelling** (rapidfuzz: word order ignored, or the compact
forms compared), which its **sound** can lift by a few points when the phonetic keys agree more
than the spelling does. Then the other facts the caller knows move it: the **country** (the
creditor's address) agreeing or not with the entity's, and the **date of birth**, strong
evidence either way. Each feature's contribution is kept and written into the alert's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

import fingerprints
import icu
import jellyfish
import yaml
from anyascii import anyascii
from rapidfuzz import fuzz, process

# Greek as BGN/PCGN romanise it, as a Greek writes a foreign name: "Μπόρις" is Boris, not Mporis.
_GREEK_BGN = icu.Transliterator.createInstance("el-el_Latn/BGN")

# How far agreeing sounds may lift a spelling score (points of 100), and what the other facts
# are worth. A differing country is weak evidence (people move, firms have branches); a
# differing date of birth is strong (a namesake).
SOUND_LIFT_MAX = 5.0
COUNTRY_AGREES, COUNTRY_DIFFERS = 4.0, -6.0
BIRTH_DATE_AGREES, BIRTH_YEAR_AGREES, BIRTH_DATE_DIFFERS = 6.0, 3.0, -25.0
UNKNOWN_COUNTRY = "ZZ"  # the synthetic list's "no country known"


@dataclass(frozen=True)
class NameKeys:
    """The comparable forms of one name."""

    sorted_tokens: str  # the fingerprint, words sorted
    compact: str  # the ordered fingerprint without spaces
    phonetic: str  # metaphone of each word, sorted

    @classmethod
    def of(cls, name: str) -> tuple[NameKeys, ...]:
        """One set of keys per transliteration that gives a different fingerprint."""
        keys: dict[str, NameKeys] = {}
        # Plain ASCII reads the same through every transliteration: fingerprint it once.
        texts = (name,) if name.isascii() else (name, anyascii(name), _GREEK_BGN.transliterate(name))
        for text in texts:
            ordered = fingerprints.generate(text, keep_order=True) or ""
            if not ordered or ordered in keys:
                continue
            words = ordered.split()
            keys[ordered] = cls(" ".join(sorted(words)), "".join(words),
                                " ".join(sorted(jellyfish.metaphone(w) for w in words)))
        return tuple(keys.values())


@dataclass(frozen=True)
class Contribution:
    feature: str  # spelling | sound | country | birth date
    points: float
    detail: str

    def __str__(self) -> str:
        sign = "" if self.feature == "spelling" else ("+" if self.points >= 0 else "")
        return f"{self.feature} {sign}{self.points:g} ({self.detail})"


@dataclass(frozen=True)
class WatchListMatch:
    entity_id: str
    listed_name: str  # the listed name or alias that matched
    primary_name: str
    score: float  # 0-100, every contribution added
    contributions: tuple[Contribution, ...] = ()

    def explain(self) -> str:
        """Each feature's part in the score, for the alert's reason."""
        return "; ".join(str(c) for c in self.contributions)


@dataclass(frozen=True)
class _Listed:
    entity_id: str
    listed_name: str
    primary_name: str
    keys: tuple[NameKeys, ...]
    country: str | None
    birth_date: str | None  # ISO date, or a year alone


def spelling_and_sound(query: NameKeys, listed: NameKeys) -> tuple[float, float]:
    spelling = max(fuzz.token_sort_ratio(query.sorted_tokens, listed.sorted_tokens),
                   fuzz.ratio(query.compact, listed.compact))
    return spelling, fuzz.ratio(query.phonetic, listed.phonetic)


def _birth_date_contribution(known: str | None, asked: date | str | None) -> Contribution | None:
    if not known or not asked:
        return None
    asked_text = asked.isoformat() if isinstance(asked, date) else str(asked)
    if asked_text == known:
        return Contribution("birth date", BIRTH_DATE_AGREES, f"{asked_text} as listed")
    if asked_text[:4] == known[:4] and (len(known) == 4 or len(asked_text) == 4):
        return Contribution("birth date", BIRTH_YEAR_AGREES, f"born {known[:4]}, as listed")
    return Contribution("birth date", BIRTH_DATE_DIFFERS, f"{asked_text}, listed {known}")


def _country_contribution(known: str | None, asked: str | None) -> Contribution | None:
    if not known or known == UNKNOWN_COUNTRY or not asked:
        return None
    asked = asked.upper()
    if asked == known:
        return Contribution("country", COUNTRY_AGREES, f"{asked}, as listed")
    return Contribution("country", COUNTRY_DIFFERS, f"{asked}, listed {known}")


class WatchList:
    """Every name and alias of every entity, reduced to keys once."""

    def __init__(self, entities: list[dict], version: str) -> None:
        self.version = version
        self._listed: list[_Listed] = []
        for entity in entities:
            born = entity.get("birth_date")
            for listed in [entity["name"], *entity.get("aliases", [])]:
                self._listed.append(_Listed(entity["id"], listed, entity["name"], NameKeys.of(listed),
                                            entity.get("country"), str(born) if born else None))
        # One row per listed name's keys, for scoring a query against all of them in one call.
        self._rows = [(i, keys) for i, listed in enumerate(self._listed) for keys in listed.keys]
        self._sorted_tokens = [keys.sorted_tokens for _, keys in self._rows]
        self._compact = [keys.compact for _, keys in self._rows]
        self._cached_best = lru_cache(maxsize=8192)(self._best)

    def _close_enough(self, queries: tuple[NameKeys, ...], floor: float) -> set[int]:
        """The listed names whose spelling is at least `floor` for some query: the only ones
        worth scoring in full (rapidfuzz compares one query with every row at once)."""
        close: set[int] = set()
        for query in queries:
            by_words = process.cdist([query.sorted_tokens], self._sorted_tokens, scorer=fuzz.token_sort_ratio,
                                     score_cutoff=floor)[0]
            by_letters = process.cdist([query.compact], self._compact, scorer=fuzz.ratio, score_cutoff=floor)[0]
            close.update(self._rows[r][0] for r in range(len(self._rows)) if by_words[r] or by_letters[r])
        return close

    @classmethod
    def load(cls, path: Path) -> WatchList:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return cls(data["entities"], str(data["version"]))

    def best_match(self, name: str, cutoff: float, country: str | None = None,
                   birth_date: date | str | None = None) -> WatchListMatch | None:
        """The closest listed name scoring at least `cutoff` (0-100) with every feature
        counted, or None."""
        return self._cached_best(name, cutoff, country, birth_date)

    def _best(self, name: str, cutoff: float, country: str | None,
              birth_date: date | str | None) -> WatchListMatch | None:
        queries = NameKeys.of(name)
        if not queries:
            return None
        best: WatchListMatch | None = None
        # Below this spelling no feature could bring a name up to the cutoff.
        floor = max(0.0, cutoff - SOUND_LIFT_MAX - max(BIRTH_DATE_AGREES, 0) - max(COUNTRY_AGREES, 0))
        for index in sorted(self._close_enough(queries, floor)):
            listed = self._listed[index]
            spelling, sound = max(spelling_and_sound(q, k) for q in queries for k in listed.keys)
            contributions = [Contribution("spelling", round(spelling, 1), f"{listed.listed_name!r}")]
            if sound > spelling:  # half the gap, a few points at most: sound supports, spelling decides
                lift = round(min((sound - spelling) / 2, SOUND_LIFT_MAX), 1)
                contributions.append(Contribution("sound", lift, f"sounds {sound:.0f}/100 alike"))
            for extra in (_country_contribution(listed.country, country),
                          _birth_date_contribution(listed.birth_date, birth_date)):
                if extra is not None:
                    contributions.append(extra)
            score = round(max(0.0, min(100.0, sum(c.points for c in contributions))), 1)
            if score >= cutoff and (best is None or score > best.score):
                best = WatchListMatch(listed.entity_id, listed.listed_name, listed.primary_name, score,
                                      tuple(contributions))
        return best
