"""The worked examples shown to the extractor before the request (data, mostly): one per env, in that env's
own observation format, with items that are true of it (``EXAMPLES``; an env not listed gets its task
style's, ``STYLE_EXAMPLES``), and the same for contrasts of a success and a failure on one task
(``CONTRAST_EXAMPLES``, ``STYLE_CONTRAST_EXAMPLES``). Why there are examples: ``experience_store.reflect``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import envs

TaskStyle = Literal["problem", "game"]


@dataclass(frozen=True)
class Example:
    """A made-up episode, rendered as ``render_trace`` renders a real one, and the items a good answer gives."""

    trace: str
    result: str
    feedback: str
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContrastExample:
    """A made-up success and failure on one task, and the items that say what made the difference."""

    success: Example
    failure: Example
    items: tuple[str, ...]


def _lake(*rows: str) -> str:
    """A FrozenLake observation's board, as the env renders it: one string per row, one character a cell
    (``g`` is the player on the goal)."""
    rule = "+" + "-----+" * len(rows[0])
    cells = {" ": "     ", "P": "  P  ", "H": "  H  ", "G": "  G  ", "g": " P/G "}
    lines = [rule]
    for row in rows:
        lines += ["|" + "|".join(cells[c] for c in row) + "|", rule]
    actions = "[up], [down], [left], [right], [w], [a], [s], [d]"
    return "Current Board:\n\n" + "\n".join(lines) + f"\n\nAvailable Actions: {actions}"


def _sokoban(*rows: str) -> str:
    """A Sokoban observation's board, as the env renders it (one string per row, cells separated by spaces)."""
    return "Current Board:\n\n" + "\n".join(rows) + "\n\nAvailable Moves: up, down, left, right"


_LAKE = ("P  ", " H ", " HG")
_BOX = ("# # # # # #", "# _ _ _ _ #", "# _ X P _ #", "# _ _ _ _ #", "# _ _ O _ #", "# # # # # #")
_BOX_AT_WALL = ("# # # # # #", "# _ _ _ _ #", "# X P _ _ #", "# _ _ _ _ #", "# _ _ O _ #", "# # # # # #")
_BOX_AT_WALL_2 = ("# # # # # #", "# _ _ _ _ #", "# X _ _ _ #", "# _ P _ _ #", "# _ _ O _ #", "# # # # # #")

# Per env (by its short name): a made-up episode in the env's own observation format, and items that are
# TRUE and general. The small model copies and perturbs what it is shown, so the example must be about
# the env in front of it (a fractions example shown before addition became "multiply the numerators").
EXAMPLES: dict[str, Example] = {
    "addition": Example(
        trace="Problem:\nWhat is 58 + 67?\n\nYour answer:\n58 + 67 = 115\nAnswer: 115",
        result="failure",
        feedback="Incorrect: the answer read from your reply was 115",
        items=(
            "Add the ones digits first; when they make 10 or more, write the last digit and carry 1 to the tens.",
            "Add the tens digits and the carried 1 together, then check the sum by adding the numbers again.",
        ),
    ),
    "math": Example(
        trace="Problem:\nCompute (6 + 4) × 3.\n\nYour answer:\n6 + 4 × 3 = 6 + 12 = 18\nAnswer: 18",
        result="failure",
        feedback="Incorrect: the answer read from your reply was 18",
        items=(
            "Work out the part in parentheses first, then multiply or divide, then add or subtract.",
            "Copy the problem exactly as written before computing, keeping every sign and parenthesis.",
        ),
    ),
    "qa": Example(
        trace=(
            "Problem:\nQuestion: Which condition is Velmoprazine used to treat?\n\nA. Kestro fever\nB. Lumab "
            "disease\nC. Orvin deficiency\nD. Tarsel blight\n\nReply with <answer>X</answer>, where X is one of "
            "A, B, C, D.\n\nYour answer:\nVelmoprazine is linked to Orvin deficiency.\n<answer>C</answer>"
        ),
        result="failure",
        feedback="Incorrect: you chose C; the answer is B (Lumab disease).",
        items=(
            "Answer from the line of the drug's entry that the question asks about: a condition it is "
            "contraindicated in is not a condition it treats.",
            "End the reply with the letter of the chosen option in the form <answer>X</answer>.",
        ),
    ),
    "frozenlake": Example(
        trace=(
            f"Turn 1\nGame:\n{_lake(*_LAKE)}\nYou:\nI go down first. [down]\n\n"
            f"Turn 2\nGame:\nYou moved down to position (1, 0).\n{_lake('   ', 'PH ', ' HG')}\n"
            "You:\nThe goal is to the right. [right]"
        ),
        result="failure",
        feedback=f"You moved right to position (1, 1).\nYou fell into a hole! Game over.\n{_lake('   ', ' P ', ' HG')}",
        items=(
            "H is a hole: moving onto an H ends the game, so check the next cell before every move.",
            "G is the goal: plan a path of empty cells to it that goes around every H.",
        ),
    ),
    "sokoban": Example(
        trace=(
            f"Turn 1\nGame:\n{_sokoban(*_BOX)}\nYou:\nThe box X is to my left. [left]\n\n"
            f"Turn 2\nGame:\nYou pushed a box while moved [left].\n{_sokoban(*_BOX_AT_WALL)}\nYou:\n[down]"
        ),
        result="failure",
        feedback=(
            "You moved [down].\nThe turn limit has been reached. You did not solve the puzzle.\n"
            + _sokoban(*_BOX_AT_WALL_2)
        ),
        items=(
            "To push a box X towards the goal O, first stand next to it on the side away from O, then move towards O.",
            "A box cannot be pulled: a box pushed against a wall can only slide along that wall.",
        ),
    ),
    "textworld": Example(
        trace=(
            "Turn 1\nGame:\n-= Pantry =-\nYou are in a pantry. You see a type P box here.\n\nThere is a type P "
            "key on the floor.\nYou:\nI will open the box.\nAction: open type P box\n\n"
            "Turn 2\nGame:\nYou have to unlock the type P box with the type P key first.\n"
            "You:\nAction: unlock type P box with type P key"
        ),
        result="failure",
        feedback="You need to take the type P key first.",
        items=(
            "A locked container or door must be unlocked with its key before it can be opened.",
            "Take a key before using it: unlock works only with a key that you are carrying.",
        ),
    ),
}

# For a researcher's new env: one example per task style, general enough to be true of most tasks.
STYLE_EXAMPLES: dict[TaskStyle, Example] = {
    "problem": Example(
        trace=(
            "Problem:\nA box holds 4 rows of 6 eggs. How many eggs are in 3 boxes?\n\n"
            "Your answer:\n4 + 6 + 3 = 13\nAnswer: 13"
        ),
        result="failure",
        feedback="Incorrect: the answer read from your reply was 13",
        items=(
            "Work out what each number in the problem stands for before choosing the operation.",
            "Check that the answer has a sensible size for the question before giving it.",
        ),
    ),
    "game": Example(
        trace=(
            "Turn 1\nGame:\n# _ P _ G #\nYou:\nThe goal G is two cells to my right. [right]\n\n"
            "Turn 2\nGame:\nYou moved right.\n# _ _ P G #\nYou:\nI will try another way. [left]"
        ),
        result="failure",
        feedback="The turn limit was reached.\n# _ P _ G #",
        items=(
            "Compare the position of P with the goal after every move and move towards the goal.",
            "A move that worked is worth repeating; changing direction without a reason wastes a turn.",
        ),
    ),
}

_SUM = "Problem:\nWhat is 58 + 67?\n\nYour answer:\n"
_ARITHMETIC = "Problem:\nCompute (3 + 5) × 4.\n\nYour answer:\n"
_QUESTION = (
    "Problem:\nQuestion: Which condition is Velmoprazine contraindicated in?\n\nA. Kestro fever\nB. Lumab "
    "disease\nC. Orvin deficiency\nD. Tarsel blight\n\nReply with <answer>X</answer>, where X is one of A, B, C, "
    "D.\n\nYour answer:\n"
)
CONTRAST_EXAMPLES: dict[str, ContrastExample] = {
    "addition": ContrastExample(
        Example(_SUM + "58 + 67 = 58 + 60 + 7 = 118 + 7 = 125\nAnswer: 125", "success", "Correct."),
        Example(_SUM + "58 + 67 = 115\nAnswer: 115", "failure", "Incorrect: the answer read from your reply was 115"),
        items=(
            "Add in two steps, first the tens of the second number and then its ones, so that no carry is lost.",
        ),
    ),
    "qa": ContrastExample(
        Example(_QUESTION + "Velmoprazine: contraindicated in Orvin deficiency.\n<answer>C</answer>", "success",
                "Correct: the answer is C (Orvin deficiency)."),
        Example(_QUESTION + "Velmoprazine treats Lumab disease.\n<answer>B</answer>", "failure",
                "Incorrect: you chose B; the answer is C (Orvin deficiency)."),
        items=(
            "Find which line of the drug's entry the question asks about (treats, dose, contraindicated in, "
            "manufacturer) and answer from that line only.",
        ),
    ),
}
STYLE_CONTRAST_EXAMPLES: dict[TaskStyle, ContrastExample] = {
    "problem": ContrastExample(
        Example(_ARITHMETIC + "(3 + 5) × 4 = 8 × 4 = 32\nAnswer: 32", "success", "Correct."),
        Example(_ARITHMETIC + "3 + 5 × 4 = 3 + 20 = 23\nAnswer: 23", "failure",
                "Incorrect: the answer read from your reply was 23"),
        items=(
            "Keep the problem exactly as written: dropping the parentheses changed the order of the operations.",
            "Work out the part in parentheses first, then multiply.",
        ),
    ),
    "game": ContrastExample(
        Example(
            "Turn 1\nGame:\n# _ P _ G #\nYou:\n[right]\n\nTurn 2\nGame:\nYou moved right.\n# _ _ P G #\nYou:\n[right]",
            "success", "You moved right. You reached the goal!\n# _ _ _ P #",
        ),
        Example(
            "Turn 1\nGame:\n# _ P _ G #\nYou:\n[right]\n\nTurn 2\nGame:\nYou moved right.\n# _ _ P G #\nYou:\n[left]",
            "failure", "The turn limit was reached.\n# _ P _ G #",
        ),
        items=("Keep moving towards the goal while the moves work; turning back wastes the turns that are left.",),
    ),
}


def short_env_name(env: str) -> str | None:
    """The registered short name of ``env`` (either name form), or None for an env not registered here."""
    try:
        return envs.spec(env).name
    except KeyError:
        return None


def example_for(env: str, style: TaskStyle) -> Example:
    """The worked example shown before extracting from an episode of ``env``: its own, else its style's."""
    return EXAMPLES.get(short_env_name(env) or "", STYLE_EXAMPLES[style])


def contrast_example_for(env: str, style: TaskStyle) -> ContrastExample:
    """The worked example shown before a contrast of ``env``: its own, else its style's."""
    return CONTRAST_EXAMPLES.get(short_env_name(env) or "", STYLE_CONTRAST_EXAMPLES[style])
