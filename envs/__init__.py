"""Gymnasium text environments: TextWorld, math (and its two-digit addition subset), domain QA, FrozenLake and Sokoban.

>>> import envs
>>> env = envs.make("math")
>>> observation, info = env.reset(seed=0)
"""

from envs.base import SPLITS, FreeText, TextEnv, sanitize_action
from envs.registry import EnvSpec, configure, make, names, parse_env_args, register, spec, unregister

register("textworld", "envs.textworld_env:TextWorldEnv", gym_id="opcd/TextWorld-v0")
register("math", "envs.math_env:MathEnv", gym_id="opcd/Math-v1")
# Sums of two two-digit numbers: the math the small default model can sometimes do, so the demo distils here.
register("addition", "envs.math_env:MathEnv", gym_id="opcd/Addition-v1", families=("addition",), level=1)
register("qa", "envs.qa_env:QAEnv", gym_id="opcd/QA-v1")
register("frozenlake", "envs.frozenlake:FrozenLakeEnv", gym_id="opcd/FrozenLake-v0")
register("sokoban", "envs.sokoban:SokobanEnv", gym_id="opcd/Sokoban-v0")

__all__ = [
    "SPLITS",
    "EnvSpec",
    "FreeText",
    "TextEnv",
    "configure",
    "make",
    "names",
    "parse_env_args",
    "register",
    "sanitize_action",
    "spec",
    "unregister",
]
