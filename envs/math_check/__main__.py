"""``python -m envs.math_check``: the sympy worker process (``envs.math_check.worker``)."""

from envs.math_check.worker import _serve

_serve()
