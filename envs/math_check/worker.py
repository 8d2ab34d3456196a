"""The sympy worker: a child process (``python -m envs.math_check``), killed when it overruns."""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from envs.math_check.limits import STARTUP_TIMEOUT, WORKER_MEMORY_BYTES, Tree


class _Worker:
    """A ``python -m envs.math_check`` child: reads ``[tree, tree]`` JSON lines, answers "1" or "0"."""

    def __init__(self) -> None:
        package = __name__.rpartition(".")[0]  # envs.math_check: its __main__ runs _serve
        root = Path(__file__).resolve().parents[package.count(".") + 1]
        path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", package],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONPATH": path},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.ready = False
        self.failed = False  # dead or overran: to be replaced
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def ask(self, job: str, deadline: float, grace: bool) -> bool | None:
        """The verdict on ``job``, or None when there is none by ``deadline`` (a ``time.monotonic``
        time; with ``grace`` the worker's start-up does not count). A worker still starting is left to
        start; one that dies or overruns is marked ``failed``."""
        try:
            if not self.ready:
                started = time.monotonic()
                line = self.lines.get(timeout=STARTUP_TIMEOUT if grace else max(deadline - started, 0.0))
                self.ready = line == "ready"
                if not self.ready:
                    self.failed = True
                    return None
                if grace:
                    deadline += time.monotonic() - started
            assert self.process.stdin is not None
            self.process.stdin.write(job + "\n")
            self.process.stdin.flush()
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.0))
        except (queue.Empty, OSError):
            self.failed = self.failed or self.ready or grace
            return None
        verdict = {"1": True, "0": False}.get(line or "")
        self.failed = verdict is None
        return verdict

    def kill(self) -> None:
        self.process.kill()
        try:
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass


class _SymbolicChecker:
    """Sends symbolic jobs to a worker, one at a time. A spare starts with the first worker, so a worker
    killed for overrunning is replaced by a warm one. Only the first job of a process waits for a start-up
    beyond its deadline; later, a replacement that is still starting simply gives no verdict (False)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._active: _Worker | None = None
        self._spare: _Worker | None = None
        self._first_job = True

    def equal(self, a: Tree, b: Tree, deadline: float) -> bool:
        job = json.dumps([a, b])
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not share its parent's pipes
                self._pid, self._active, self._spare, self._first_job = os.getpid(), None, None, True
            if time.monotonic() >= deadline:
                return False
            if self._active is None:
                self._active, self._spare = _Worker(), _Worker()
            verdict = self._active.ask(job, deadline, grace=self._first_job)
            self._first_job = False
            if self._active.failed:
                self._active.kill()
                spare = self._spare
                self._active = spare if spare is not None and spare.process.poll() is None else _Worker()
                self._spare = _Worker()
            return bool(verdict)

    def close(self) -> None:
        with self._lock:
            for worker in (self._active, self._spare):
                if worker is not None and self._pid == os.getpid():
                    worker.kill()
            self._active = self._spare = None


_SYMBOLIC = _SymbolicChecker()
atexit.register(_SYMBOLIC.close)


def _to_sympy(node: list, sp: Any) -> Any:
    """Build a sympy expression from a parsed tree (constructors only, never from text)."""
    kind = node[0]
    if kind == "n":
        return sp.Rational(node[1], node[2])
    if kind == "s":
        return sp.Symbol(node[1])
    if kind == "c":
        return sp.pi if node[1] == "pi" else sp.E
    if kind == "neg":
        return -_to_sympy(node[1], sp)
    if kind == "f":
        return _sympy_function(node[1], sp)(_to_sympy(node[2], sp))
    a, b = _to_sympy(node[1], sp), _to_sympy(node[2], sp)
    return {"+": sp.Add, "*": sp.Mul, "^": sp.Pow}[kind](a, b) if kind != "/" else a / b


def _sympy_function(name: str, sp: Any) -> Any:
    functions = {
        "sqrt": sp.sqrt, "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "sec": sp.sec, "csc": sp.csc,
        "cot": sp.cot, "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "asin": sp.asin,
        "acos": sp.acos, "atan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh, "tanh": sp.tanh,
        "log": sp.log, "ln": sp.log, "exp": sp.exp, "abs": sp.Abs,
    }  # fmt: skip
    return functions[name]


def _serve() -> None:
    """Worker loop (``python -m envs.math_check``): one ``[tree, tree]`` JSON line in, "1"/"0" out."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass  # no address-space limit on this platform: the parent's timeout still bounds the job
    import sympy

    print("ready", flush=True)
    for line in sys.stdin:
        try:
            a, b = (_to_sympy(tree, sympy) for tree in json.loads(line))
            difference = a - b
            equal = difference == 0 or sympy.simplify(difference) == 0 or difference.equals(0) is True
        except Exception:  # noqa: BLE001 - a job that sympy cannot handle is simply not equal
            equal = False
        print("1" if equal else "0", flush=True)

