"""``python -m experience_store reflect``: knowledge from stored episodes, and the gate's decision.

Its settings are ``ReflectConfig``'s fields (the loop's ``--reflect-*`` flags are built from the same
fields), plus who writes and who plays: ``--model`` (the extractor, e.g. a larger model) and
``--agent-model`` (whose episodes are read and who plays validation).
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

import envs
from agents.evaluate import PassRate
from agents.llm import LLM, load_llm
from common.config import add_arguments, from_arguments
from experience_store.decision import KnowledgeDecision
from experience_store.errors import NotAStore
from experience_store.knowledge import knowledge_text, llm_token_counter
from experience_store.records import KnowledgeItem, KnowledgeSet
from experience_store.reflect import Contrast, Extractor, task_style
from experience_store.selection import PassRateScorer, ReflectConfig, ReflectError, Source, label, newest_model, reflect
from experience_store.store import ExperienceStore

console = Console(highlight=False)


def add_reflect_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--env", required=True, help="env name, as agents.play stored its episodes, e.g. math or frozenlake")
    add("--model", help="the model that writes the knowledge (default: the agent model; e.g. a larger one)")
    add("--agent-model", help="the model whose train episodes are read and who plays validation in context "
        "(default: the model of the env's newest train episode)")
    add("--round", type=int, default=0, help="the experiential-learning round, for provenance (default %(default)s)")
    add("--backend", choices=["hf", "vllm"], default="hf")
    add("--dtype", choices=["float32", "bfloat16", "float16", "auto"], default="float32")
    add("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    add_arguments(parser.add_argument_group("reflection and the gate"), ReflectConfig)


def _load(name: str, args: argparse.Namespace) -> LLM:
    # Imported here: agents.models pulls in torch and transformers, which the other commands never need.
    from agents.models import ModelNotFound

    try:
        with console.status(f"loading {name}..."):
            return load_llm(name, backend=args.backend, dtype=args.dtype, device=args.device)
    except ModelNotFound as exc:
        raise ReflectError(str(exc)) from None


def _print_items(seed: int, step: int, source: Source, items: list[KnowledgeItem]) -> None:
    def outcome(success: bool | None) -> Text:
        return Text("success", style="green") if success else Text("failure", style="red")

    head = (f"seed {seed} step {step} ", "bold")
    if isinstance(source, Contrast):
        console.print(Text.assemble(head, f"task {source.success.task_id}: ", outcome(True), " vs ", outcome(False)))
    else:
        console.print(Text.assemble(head, f"episode {source.uuid[:10]} (", outcome(source.success), ")"))
    for item in items:
        console.print(Text.assemble(("  - ", "cyan"), item.text))
    if not items:
        console.print(Text("  (no parsable item)", style="dim"))


def decision_table(decision: KnowledgeDecision, sets: dict[str, KnowledgeSet]) -> Table:
    """No context and each candidate on the same validation tasks, each candidate's paired gain, the verdict."""
    table = Table(title=f"The gate for {decision.env}, round {decision.round} ({decision.split} split, "
                        f"{decision.no_context.n} tasks; gain: paired, points [95% interval] and McNemar p)")  # fmt: skip
    for column in ("candidate", "set", "items", "tokens", "pass rate [95%]", "gain over no context", "accepted"):
        table.add_column(column, justify="left" if column in ("candidate", "set") else "right")
    table.add_row("no context", "", "", "0", str(decision.no_context), "", "")
    for s in decision.candidates:
        stored = sets.get(s.set_id)
        size = (str(len(stored.items)), str(stored.token_count)) if stored else ("", "")
        mark = Text("✓", style="bold green") if s.set_id == decision.accepted else ""
        table.add_row(s.label, s.set_id[:12], *size, str(s.rate), str(s.gain), mark)
    table.caption = f"{decision.verdict}\nrule: {decision.rule}"
    return table


def cmd_reflect(args: argparse.Namespace) -> int:
    try:
        envs.spec(args.env)  # an unknown env fails here, before anything is opened or loaded
        config = from_arguments(args, ReflectConfig)
    except (KeyError, ValueError) as exc:
        raise ReflectError(exc.args[0]) from None
    if not args.store.exists():  # opening it would create it; anything else there, open refuses
        raise NotAStore(f"{args.store}: no such store; create it with python -m agents.play --store {args.store}")
    with ExperienceStore.open(args.store, timeout=args.timeout) as store:
        agent_model = args.agent_model or newest_model(store, args.env)
        agent_llm = _load(agent_model, args)
        extractor_llm = agent_llm if args.model in (None, agent_model) else _load(args.model, args)
        extractor = Extractor(extractor_llm, task_style(args.env), config.options, config.extraction, round=args.round)
        console.print(
            f"reflecting on {args.env} train episodes of {agent_model} with {extractor_llm.name}: {config.knowledge} "
            f"candidates, {config.candidates} seed(s) x {config.episodes_per_candidate} episodes, budget "
            f"{config.budget} tokens", soft_wrap=True,
        )

        def on_score(s: KnowledgeSet, rate: PassRate) -> None:
            console.print(f"scored {label(s)} ({s.uuid[:12]}): {rate}")

        result = reflect(
            store, extractor, PassRateScorer.from_config(agent_llm, args.env, config), args.env,
            llm_token_counter(extractor_llm), config, agent_model=agent_model,
            trace_scorer=PassRateScorer.from_config(agent_llm, args.env, config, "traces"),
            on_items=_print_items, on_score=on_score,
        )
    console.print(decision_table(result.decision, {s.uuid: s for s in result.candidates}))
    for name, rate in result.baselines.items():
        if name != "no context":
            console.print(f"baseline {name}: {rate}")
    if result.selected is not None:
        title = f"accepted knowledge set {result.selected.uuid[:12]} for {args.env}: {len(result.selected.items)} items"
        console.print(Panel(Text(knowledge_text(result.selected.items)), title=title))
    return 0
