"""TextWorld games as a text environment, generated offline from a seed and a difficulty and cached.

``generate_game(seed, difficulty)`` builds a game with TextWorld's own generator (map, objects, one
linear quest, text from the "house" grammar), compiles it with the bundled Inform 7 compiler and keeps
it in ``cache_root() / "textworld"``: one folder per game, built aside and renamed into place, so
concurrent processes never see half a game. ``TextWorldEnv`` plays cached games through TextWorld's
Jericho (Z-machine) backend.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import unicodedata
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import jericho
import textworld
from textworld.generator import QuestGenerationError, compile_game, make_game

from envs.base import MAX_OBSERVATION_CHARS, TextEnv
from common.files import atomic_path
from envs.cache import cache_root


@dataclass(frozen=True)
class Difficulty:
    """Size of a generated game: rooms, objects (at least; keys and containers of the quest count)
    and quest length (actions of the generated quest; the walkthrough can be a step or two shorter)."""

    rooms: int
    objects: int
    quest_length: int

    @property
    def step_budget(self) -> int:
        """The default ``max_steps``: ten steps per quest action (20 / 50 / 100 for easy / medium / hard)."""
        return 10 * self.quest_length


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty(rooms=2, objects=4, quest_length=2),
    "medium": Difficulty(rooms=5, objects=10, quest_length=5),
    "hard": Difficulty(rooms=10, objects=20, quest_length=10),
}

# Disjoint seed ranges per split; the same ranges serve every difficulty.
SEED_RANGES: dict[str, range] = {
    "train": range(0, 10_000),
    "validation": range(10_000, 10_100),
    "test": range(20_000, 20_100),
}

GAME_FILE = "game.z8"  # TextWorld writes game.json (needed to play) and game.ni (Inform source) beside it
META_FILE = "meta.json"  # written last: a folder holding it is a complete game
_BUILD_REVISION = 1  # bump when the way games are built changes: old cache entries are then ignored
_MAX_ATTEMPTS = 10
_RETRY_SEED_BASE = 2**31  # retry seeds lie above every pool seed, so a retry never repeats a pool game

_MAX_COMMAND_CHARS = 180  # Jericho truncates input at 198 bytes
_COMMAND_SEPARATORS = re.compile(r"[.,;!?]|\bthen\b")
_NOT_COMMAND_CHARS = re.compile(r"[^a-z0-9' -]+")  # entity names use letters, digits, hyphens, apostrophes
# Interpreter and framework commands that would desynchronise the score and state tracking
# (restart, restore), stop the game (quit), prompt for files or yes/no (save, script) or reveal or
# change the game's internals (TextWorld's tw-* hooks, the print-state and restrict-commands options).
_BLOCKED_COMMAND = re.compile(
    r"^(?:(?:restart|restore|save|quit|q|script|unscript|transcript|noscript)\b|tw-"
    r"|(?:enable|disable) print state\b|restrict commands\b)"
)
BLOCKED_REPLY = "That command is not available in this game."
EMPTY_REPLY = "Nothing happens."
_REQUESTED_INFOS = textworld.EnvInfos(admissible_commands=True, score=True, won=True, lost=True)

# TextWorld's ASCII-art title, the status line after the prompt ("-= Room =-score/moves"), the prompt.
_BANNER_LINE = re.compile(r"^[ _|\\$/<>]*[_|\\$/][ _|\\$/<>]*\n", re.MULTILINE)
_STATUS_LINE = re.compile(r"[ \t]*-= [^\n]* =-\d+/\d+[ \t]*$")
_PROMPT_LINE = re.compile(r"\n>[^\n]*$")
_END_MENU = "Would you like to RESTART, RESTORE a saved game, QUIT or UNDO the last command?"

_ACTION_LINE = re.compile(r"^[^\n]*?\baction\b[^\w\n]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_QUOTED = re.compile(r"`([^`\n]+)`|\"([^\"\n]+)\"|\u201c([^\u201d\n]+)\u201d")
_REPLY_NOISE = " \t*_`'\"[](){}<>.,;:!?"


# -- generation and cache ---------------------------------------------------------------------------


def cache_entry(seed: int, difficulty: str, cache_dir: Path | str | None = None) -> Path:
    """The cache folder of a game; its name encodes TextWorld's version, the difficulty (and a hash of
    its preset) and the seed."""
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "textworld"
    preset = json.dumps([asdict(DIFFICULTIES[difficulty]), _BUILD_REVISION])
    tag = hashlib.sha1(preset.encode()).hexdigest()[:8]
    return root / f"tw{textworld.__version__}-{difficulty}-{tag}-{seed}"


def generate_game(seed: int, difficulty: str, cache_dir: Path | str | None = None) -> Path:
    """Path to the compiled game (``.z8``) of ``seed`` at ``difficulty``, built on first use.

    The same (seed, difficulty) gives the same game on any machine. Safe under concurrent callers:
    each builds in a private folder and renames it into place; an incomplete entry is rebuilt.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}; expected one of {', '.join(DIFFICULTIES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _RETRY_SEED_BASE:
        raise ValueError(f"seed must be an int in [0, {_RETRY_SEED_BASE}), got {seed!r}")
    entry = cache_entry(seed, difficulty, cache_dir)
    if read_meta(entry) is None:
        if entry.exists():
            _discard(entry)
        with atomic_path(entry) as build:
            _build_game(build, seed, difficulty)
    return entry / GAME_FILE


def read_meta(entry: Path) -> dict[str, Any] | None:
    """The metadata of a cached game (objective, walkthrough, content id...); None if incomplete."""
    try:
        meta = json.loads((entry / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    complete = (entry / GAME_FILE).is_file() and (entry / "game.json").is_file()
    return meta if complete and isinstance(meta, dict) else None


def _discard(entry: Path) -> None:
    """Move a broken entry out of the way (atomically) and delete it; another process may beat us."""
    trash = entry.with_name(f".{entry.name}.{uuid.uuid4().hex}.trash")
    try:
        os.rename(entry, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _generator_seed(seed: int, attempt: int) -> int:
    if attempt == 0:
        return seed
    digest = hashlib.sha256(f"{seed}/{attempt}".encode()).digest()
    return _RETRY_SEED_BASE + int.from_bytes(digest[:4], "big") % _RETRY_SEED_BASE


def _game_options(generator_seed: int, difficulty: Difficulty, path: Path) -> textworld.GameOptions:
    options = textworld.GameOptions()
    options.seeds = generator_seed  # one int seeds the map, objects, quest and grammar generators
    options.nb_rooms = difficulty.rooms
    options.nb_objects = difficulty.objects
    options.quest_length = difficulty.quest_length
    options.path = str(path)
    options.force_recompile = True
    return options


def _build_game(build: Path, seed: int, difficulty: str) -> None:
    """Generate, compile and check a game in ``build``; retry with derived seeds when needed.

    A seed is replaced when no quest of the preset's length fits its world, or when the walkthrough
    does not win the compiled game: TextWorld sometimes names two objects so that the parser cannot
    tell them apart ("Which do you mean, the locker or the type 0 locker?").
    """
    for attempt in range(_MAX_ATTEMPTS):
        shutil.rmtree(build, ignore_errors=True)
        generator_seed = _generator_seed(seed, attempt)
        options = _game_options(generator_seed, DIFFICULTIES[difficulty], build / GAME_FILE)
        try:
            game = make_game(options)
        except QuestGenerationError:
            continue
        compile_game(game, options)
        walkthrough = list(game.walkthrough or [])
        if walkthrough and _walkthrough_wins(build / GAME_FILE, walkthrough):
            data = json.loads((build / "game.json").read_text())
            content = {key: data[key] for key in ("world", "quests", "infos", "objective")}
            meta = {
                "textworld": textworld.__version__,
                "difficulty": difficulty,
                "seed": seed,
                "generator_seed": generator_seed,
                "content_id": hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12],
                "objective": game.objective,
                "walkthrough": walkthrough,
                "max_score": game.max_score,
            }
            (build / META_FILE).write_text(json.dumps(meta, indent=1))
            return
    raise RuntimeError(f"no playable {difficulty} game for seed {seed} in {_MAX_ATTEMPTS} attempts")


def start_game(path: Path, request_infos: textworld.EnvInfos) -> Any:
    """Load a compiled game in TextWorld's Jericho backend (a textworld ``Environment``)."""
    with warnings.catch_warnings():
        # Jericho warns that it has no bindings for TextWorld's games: TextWorld reads score, moves
        # and the game state from its own markers instead, so nothing is missing.
        warnings.simplefilter("ignore", jericho.UnsupportedGameWarning)
        return textworld.start(str(path), request_infos=request_infos)


def _walkthrough_wins(path: Path, walkthrough: list[str]) -> bool:
    game = start_game(path, textworld.EnvInfos(won=True))
    try:
        game.reset()
        for command in walkthrough:
            state, _, done = game.step(to_game_command(command))
            if done:
                return bool(state["won"])
        return False
    finally:
        game.close()


# -- text in and out --------------------------------------------------------------------------------


def to_game_command(action: str) -> str:
    """The command the interpreter receives for ``action``: ASCII, lower case, one command, short.

    Non-ASCII is transliterated or dropped (frotz reads bytes as ZSCII, and Jericho raises when its
    198-byte cut splits a UTF-8 character). Only letters, digits, spaces, hyphens and apostrophes are
    kept: dumb-frotz reads a backslash as its own escape (a leading ``\\q`` or ``\\help`` loops
    forever). Only the first command is kept: Inform runs "take key. open box" or "take key then open
    box" as several turns in one step.
    """
    text = unicodedata.normalize("NFKD", action).encode("ascii", "ignore").decode().lower()
    first = next((part for part in _COMMAND_SEPARATORS.split(text) if part.strip()), "")
    command = " ".join(_NOT_COMMAND_CHARS.sub(" ", first).split())
    if len(command) > _MAX_COMMAND_CHARS:
        command = command[: _MAX_COMMAND_CHARS + 1].rsplit(" ", 1)[0][:_MAX_COMMAND_CHARS]
    return command


def is_blocked(command: str) -> bool:
    """Whether a (normalised) command is an interpreter or framework command the env refuses."""
    return _BLOCKED_COMMAND.match(command) is not None


def clean_feedback(text: str, objective: str | None = None) -> str:
    """Game text without the ASCII-art banner, the objective (given on reset), the prompt, the
    status line (room, score/moves) and the end-of-game menu."""
    if objective and objective in text:
        text = text.split(objective, 1)[1]
    text = _STATUS_LINE.sub("", text.rstrip())
    text = _PROMPT_LINE.sub("", text)
    text = _BANNER_LINE.sub("", text.replace(_END_MENU, ""))
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)  # the end-of-game banner is indented
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return text[:MAX_OBSERVATION_CHARS] or EMPTY_REPLY


def extract_command(reply: str) -> str:
    """The command a free-form reply names: the last ``Action:`` line, else the last backticked or
    quoted span, else the last non-empty line; lower case, without surrounding punctuation."""
    found = [m.group(1) for m in _ACTION_LINE.finditer(reply) if m.group(1).strip(_REPLY_NOISE)]
    if not found:
        found = [next(g for g in m.groups() if g) for m in _QUOTED.finditer(reply)]
        found = [span for span in found if span.strip(_REPLY_NOISE)]
    if not found:
        found = [line for line in reply.splitlines() if line.strip(_REPLY_NOISE)]
    if not found:
        return ""
    text = found[-1].strip(_REPLY_NOISE).lower()
    if text.startswith(">"):
        text = text[1:]
    return " ".join(text.split()).strip(_REPLY_NOISE)


def match_admissible(command: str, admissible: list[str]) -> str:
    """The admissible command meant by ``command``: equal to it, else the longest one it contains
    (the later one on ties), else a close spelling; ``command`` itself when none fits."""
    by_lower = {candidate.lower(): candidate for candidate in admissible}
    if not by_lower or command in by_lower:
        return by_lower.get(command, command)
    best: tuple[int, int, str] | None = None
    for lower, candidate in by_lower.items():
        hits = list(re.finditer(rf"(?<![a-z0-9]){re.escape(lower)}(?![a-z0-9])", command))
        if hits and (best is None or (len(lower), hits[-1].start()) > best[:2]):
            best = (len(lower), hits[-1].start(), candidate)
    if best is not None:
        return best[2]
    close = difflib.get_close_matches(command, list(by_lower), n=1, cutoff=0.8)
    return by_lower[close[0]] if close else command


# -- the environment --------------------------------------------------------------------------------


class TextWorldEnv(TextEnv):
    """A generated TextWorld game: reach the objective by typing commands.

    Task pool, per difficulty (see ``DIFFICULTIES``): train 10,000 games (seeds 0-9,999), validation
    100 (seeds 10,000-10,099), test 100 (seeds 20,000-20,099). Games are generated on first use and
    cached (``generate_game``). ``task_id`` is ``tw-<difficulty>-<12 hex>``, a hash of the game's
    world, quest, entity texts and objective. The splits are disjoint by content: each seed draws four
    generator seeds (map, objects, quest, grammar, each < 65,635), so two pool seeds share a game only
    if all four coincide (probability ~1e-11 over the pool); 400 easy games (the smallest) drawn
    across the three splits had 400 distinct content hashes.

    The first observation is the starting room (the objective is in ``instructions``); observations
    carry no banner or status line. Reward is the change in TextWorld's score (one point per quest:
    1.0 when the game is won); terminated = won or lost; truncated = ``max_steps`` reached (by default
    ten steps per quest action: 20 easy, 50 medium, 100 hard).
    ``info["admissible_actions"]`` lists the commands TextWorld considers valid now.
    Commands are normalised (``to_game_command``); interpreter commands (save, restart, quit...) are
    refused with ``BLOCKED_REPLY`` and cost a step.
    """

    split_sizes: ClassVar[dict[str, int]] = {split: len(seeds) for split, seeds in SEED_RANGES.items()}

    def __init__(
        self,
        difficulty: str = "easy",
        max_steps: int | None = None,
        cache_dir: Path | str | None = None,
        render_mode: str | None = None,
        default_split: str = "train",
    ) -> None:
        super().__init__(render_mode=render_mode, default_split=default_split)
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"unknown difficulty {difficulty!r}; expected one of {', '.join(DIFFICULTIES)}")
        max_steps = DIFFICULTIES[difficulty].step_budget if max_steps is None else max_steps
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
        self.difficulty = difficulty
        self.max_steps = max_steps
        self.cache_dir = cache_dir
        self._game: Any = None  # the running textworld Environment
        self._game_path: Path | None = None
        self._meta: dict[str, Any] = {}
        self._admissible: list[str] = []
        self._score = 0
        self._steps = 0

    @property
    def instructions(self) -> str:
        objective = self._meta.get("objective", "(reset the environment to get a game and its objective)")
        return (
            "You are playing a text adventure game. You move between rooms and handle objects by typing "
            "short commands in plain English; the game tells you what happens.\n"
            "Useful commands: look, inventory, go north/south/east/west, examine <thing>, open <thing>, "
            "close <thing>, take <thing>, take <thing> from <container or supporter>, drop <thing>, "
            "put <thing> on <supporter>, insert <thing> into <container>, unlock <door or container> "
            "with <key>, lock <door or container> with <key>, eat <food>.\n\n"
            f"Your objective: {objective}\n\n"
            "Reply with exactly ONE command per turn. End your reply with a line of the form\n"
            "Action: <command>"
        )

    def parse_action(self, reply: str) -> str:
        """The command in a model reply (``extract_command``), mapped to the admissible command it
        names when there is one (``match_admissible``, which returns that command verbatim)."""
        if isinstance(reply, bytes):
            reply = reply.decode("utf-8", errors="replace")
        # The command sits at the end of a reply: a huge reply keeps its tail.
        command = extract_command(str(reply)[-4 * MAX_OBSERVATION_CHARS :])[: self.max_action_chars]
        return match_admissible(command, self._admissible)

    def reference_solution(self) -> list[str]:
        if not self._meta:
            raise RuntimeError("call reset() first: there is no current game")
        return list(self._meta["walkthrough"])

    def _reset_task(self, split: str, index: int) -> tuple[str, dict[str, Any]]:
        path = generate_game(SEED_RANGES[split][index], self.difficulty, self.cache_dir)
        if path != self._game_path:
            self._close_game()
            meta = read_meta(path.parent)
            if meta is None:
                raise RuntimeError(f"cache entry {path.parent} vanished or broke while loading")
            self._meta = meta
            self._game = start_game(path, _REQUESTED_INFOS)
            self._game_path = path
        state = self._game.reset()  # restarts the interpreter: a clean game
        self._score = state["score"]
        self._admissible = list(state["admissible_commands"])
        self._steps = 0
        return clean_feedback(state["feedback"], self._meta["objective"]), self._info(success=False)

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        command = to_game_command(action)
        self._steps += 1
        won = lost = False
        reward = 0
        if is_blocked(command):
            observation = BLOCKED_REPLY
        else:
            state, _, _ = self._game.step(command)
            observation = clean_feedback(state["feedback"])
            won, lost = bool(state["won"]), bool(state["lost"])
            self._admissible = list(state["admissible_commands"])
            reward = state["score"] - self._score
            self._score = state["score"]
        terminated = won or lost
        truncated = not terminated and self._steps >= self.max_steps
        return observation, float(reward), terminated, truncated, self._info(success=won)

    def _info(self, success: bool) -> dict[str, Any]:
        return {
            "task_id": f"tw-{self.difficulty}-{self._meta['content_id']}",
            "seed": self._meta["seed"],
            "admissible_actions": list(self._admissible),
            "score": self._score,
            "max_score": self._meta["max_score"],
            "success": success,
        }

    def _close_game(self) -> None:
        if self._game is not None:
            self._game.close()
        self._game = None
        self._game_path = None

    def close(self) -> None:
        """Stop the interpreter; a later ``reset`` starts it again."""
        self._close_game()
        super().close()

