"""An invented pharmacology formulary: drugs, facts, a handbook and questions, all derived from a seed.

No model can know these facts without the handbook, which makes the formulary a clean test of context
distillation: the handbook is the context, the questions probe it. Each drug has exactly one value per
attribute (the condition it treats, its standard dose, the condition it is contraindicated in, its
manufacturer) and every value is unique across drugs, so every question has exactly one right option.
All names are built from syllables; every draw comes from SHA-256 (``HashRng``), so a seed gives the
same domain on any machine, Python or numpy version.

Questions, per drug: 4 direct ("What is the standard dose of Velomarin?"), 4 reverse ("Which drug is
manufactured by Dornavi Labs?") and 12 two-hop, naming the drug by another attribute ("What is the
standard dose of the drug manufactured by Dornavi Labs?"): 20 per drug. Distractors are other drugs'
values of the same attribute (other drug names for reverse questions). The pool is shuffled and cut
into test (10%), validation (10%) and train (the rest); questions are unique, so the splits are disjoint
by content while sharing the facts (held-out questions test the knowledge, not a memorised item). The
test split also holds 16 statement questions per drug ("Which statement about the drug manufactured by
Dornavi Labs is true?", the options statements such as "Its standard dose is 20 mg once daily."), so
that it is large enough to resolve a 10-point difference.

Default size (20 drugs, 4 options): 720 questions, 320 train / 40 validation / 360 test; the handbook is
about 3,000 characters, ~930 SmolLM2 tokens (invented names cost several tokens each); 50 drugs make
about 7,400 characters, ~2,300 tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from envs.qa_items import LETTERS, MCQItem

T = TypeVar("T")
MAX_ENTITIES = 500

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "tr", "st")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "", "n", "r", "l", "s", "x")
_DRUG_SUFFIXES = ("zole", "pril", "statin", "mab", "dipine", "lol", "cillin", "vir", "tide", "sartan",
                  "mycin", "zine")
_INDICATION_KINDS = ("fever", "syndrome", "palsy", "disease", "blight", "ague")
_CONTRAINDICATION_KINDS = ("deficiency", "intolerance", "sensitivity")
_COMPANY_KINDS = ("Labs", "Pharma", "Therapeutics", "Biologics", "Medica")
_FREQUENCIES = ("once daily", "twice daily", "three times daily", "once weekly")


class HashRng:
    """Random draws from SHA-256 in counter mode, keyed by any values: identical everywhere."""

    def __init__(self, *key: object) -> None:
        self._prefix = json.dumps([str(part) for part in key]).encode()
        self._counter = 0

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)`` (rejection sampling, no modulo bias)."""
        limit = (1 << 64) - (1 << 64) % n
        while True:
            digest = hashlib.sha256(self._prefix + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
            value = int.from_bytes(digest[:8], "big")
            if value < limit:
                return value % n

    def choice(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def sample(self, items: Sequence[T], k: int) -> list[T]:
        """``k`` distinct elements in random order (a partial Fisher-Yates shuffle)."""
        pool = list(items)
        for i in range(k):
            j = i + self.below(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]


@dataclass(frozen=True)
class Attribute:
    """One fact every drug has, and how the handbook and the questions phrase it."""

    key: str
    label: str  # the handbook line: "- {label}: {value}"
    ask: str  # a question about {subject}, a drug's name or a description of it
    reverse: str  # "Which drug ..." a question whose answer is the drug with {value}
    describe: str  # names the drug with {value}: "the drug ..."
    state: str  # a statement about a drug: "It ... {value}."


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("indication", "treats", "Which condition is {subject} used to treat?",
              "Which drug is used to treat {value}?", "the drug used to treat {value}", "It is used to treat {value}."),
    Attribute("dose", "standard dose", "What is the standard dose of {subject}?",
              "Which drug has a standard dose of {value}?", "the drug with a standard dose of {value}",
              "Its standard dose is {value}."),
    Attribute("contraindication", "contraindicated in", "In which condition is {subject} contraindicated?",
              "Which drug is contraindicated in {value}?", "the drug contraindicated in {value}",
              "It is contraindicated in {value}."),
    Attribute("manufacturer", "manufacturer", "Which company manufactures {subject}?",
              "Which drug is manufactured by {value}?", "the drug manufactured by {value}",
              "It is manufactured by {value}."),
)


@dataclass(frozen=True)
class Drug:
    """An invented drug: its name and one value per attribute key."""

    name: str
    facts: dict[str, str]


class _Namer:
    """Draws syllable stems never used before, so no two names in a domain share a stem."""

    def __init__(self, rng: HashRng) -> None:
        self._rng = rng
        self._used: set[str] = set()

    def stem(self) -> str:
        while True:
            stem = "".join(self._rng.choice(_ONSETS) + self._rng.choice(_VOWELS) + self._rng.choice(_CODAS)
                           for _ in range(2)).capitalize()
            if stem not in self._used:
                self._used.add(stem)
                return stem

    def name(self, suffixes: Sequence[str], sep: str = "") -> str:
        """A new stem joined to one of ``suffixes``, unique as a whole string too."""
        while True:
            name = self.stem() + sep + self._rng.choice(suffixes)
            if name not in self._used:
                self._used.add(name)
                return name


class FormularyDomain:
    """The formulary for ``seed``: ``drugs``, ``handbook``, ``questions`` and their ``splits``.

    ``num_entities`` drugs (``num_options`` to ``MAX_ENTITIES``), questions with ``num_options`` options.
    """

    def __init__(self, seed: int = 0, num_entities: int = 20, num_options: int = 4) -> None:
        if not 2 <= num_options <= len(LETTERS):
            raise ValueError(f"num_options must be 2-{len(LETTERS)}, got {num_options}")
        if not num_options <= num_entities <= MAX_ENTITIES:
            raise ValueError(f"num_entities must be {num_options}-{MAX_ENTITIES} "
                             f"(at least num_options={num_options}), got {num_entities}")
        self.seed = seed
        self.num_options = num_options
        self.drugs = _make_drugs(seed, num_entities)
        self._by_name = {drug.name: drug for drug in self.drugs}
        self.handbook = self._handbook()
        self.questions = self._questions()
        self.splits = self._splits()

    def section(self, name: str) -> str:
        """The handbook block of drug ``name``."""
        drug = self._by_name[name]
        lines = [f"- {a.label}: {drug.facts[a.key]}" for a in ATTRIBUTES]
        return "\n".join([drug.name, *lines])

    def _handbook(self) -> str:
        header = (f"Formulary handbook: {len(self.drugs)} drugs. For each drug: the condition it treats, its "
                  "standard dose, the condition in which it is contraindicated, and its manufacturer.")
        return "\n\n".join([header, *(self.section(d.name) for d in self.drugs)]) + "\n"

    def _item(self, question: str, answer: str, others: list[str], subject: str) -> MCQItem:
        rng = HashRng(self.seed, "options", question)
        options = [answer, *rng.sample(others, self.num_options - 1)]
        order = rng.sample(range(len(options)), len(options))
        shuffled = tuple(options[i] for i in order)
        return MCQItem(question, shuffled, shuffled.index(answer), subject)

    def _questions(self) -> list[MCQItem]:
        items = []
        for drug in self.drugs:
            other_names = [d.name for d in self.drugs if d is not drug]
            for attr in ATTRIBUTES:
                value = drug.facts[attr.key]
                others = [d.facts[attr.key] for d in self.drugs if d is not drug]
                items.append(self._item(attr.ask.format(subject=drug.name), value, others, drug.name))
                items.append(self._item(attr.reverse.format(value=value), drug.name, other_names, drug.name))
                for clue in ATTRIBUTES:
                    if clue is not attr:
                        subject = clue.describe.format(value=drug.facts[clue.key])
                        items.append(self._item(attr.ask.format(subject=subject), value, others, drug.name))
        return items

    def _statement_questions(self) -> list[MCQItem]:
        """Per drug, 16 "Which statement about <drug> is true?" questions: the drug by name or by another
        attribute's value, one statement per option (the other options: other drugs' values)."""
        items = []
        for drug in self.drugs:
            for attr in ATTRIBUTES:
                true = attr.state.format(value=drug.facts[attr.key])
                false = [attr.state.format(value=d.facts[attr.key]) for d in self.drugs if d is not drug]
                subjects = [drug.name] + [c.describe.format(value=drug.facts[c.key]) for c in ATTRIBUTES if c is not attr]
                for subject in subjects:
                    items.append(self._item(f"Which statement about {subject} is true?", true, false, drug.name))
        return items

    def _splits(self) -> dict[str, list[MCQItem]]:
        """Test first, then validation (a tenth each), train the rest; then every statement question
        joins test, after the original ones (so the first 10% of test is what it was before QA-v1)."""
        shuffled = HashRng(self.seed, "split").sample(self.questions, len(self.questions))
        tenth = len(shuffled) // 10
        statements = self._statement_questions()
        statements = HashRng(self.seed, "statements").sample(statements, len(statements))
        return {"train": shuffled[2 * tenth:], "validation": shuffled[tenth:2 * tenth],
                "test": shuffled[:tenth] + statements}


def _make_drugs(seed: int, count: int) -> tuple[Drug, ...]:
    rng = HashRng(seed, "drugs")
    namer = _Namer(rng)
    # Doses are 5-1000 mg at one of four frequencies: 800 distinct values, drawn without replacement.
    combos = rng.sample(range(200 * len(_FREQUENCIES)), count)
    doses = [f"{5 * (c // len(_FREQUENCIES) + 1)} mg {_FREQUENCIES[c % len(_FREQUENCIES)]}" for c in combos]
    drugs = []
    for i in range(count):
        facts = {
            "indication": namer.name(_INDICATION_KINDS, sep=" "),
            "dose": doses[i],
            "contraindication": namer.name(_CONTRAINDICATION_KINDS, sep=" "),
            "manufacturer": namer.name(_COMPANY_KINDS, sep=" "),
        }
        drugs.append(Drug(namer.name(_DRUG_SUFFIXES), facts))
    return tuple(drugs)
