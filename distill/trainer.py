"""The distillation trainer: OPCD and its baselines, one optimizer step at a time.

An OPCD step (``Distiller.step``), as in the paper:

1. the student samples episodes of the env's train split WITHOUT the context, with its current weights
   (for games every turn of an episode is a sample);
2. the frozen teacher scores exactly those reply tokens WITH the context in its system message (the
   shared context prefix is computed once and its key/value cache reused for every sample);
3. the loss is the per-token reverse KL(student || teacher) on the reply tokens;
4. one AdamW step with gradient clipping. No gradient flows through sampling; no PPO ratio.

Steps 2-3 run in passes of at most ``max_batch_tokens`` padded tokens whose gradients add up to the whole
batch's (multi-turn games make long rows, and activations grow with rows × length).

Every tensor a model reads is packed on that model's device (``distill.sequences.pack``). Data parallelism
(``accelerate launch``) goes through accelerate's ``Accelerator``: each process samples its own episodes,
the student's decoder is wrapped in DDP, and the loss is reduced over all processes' tokens (or rows)
together, so the gradient is the one of the union batch.

Baselines change steps 1-3: ``offpolicy`` lets the teacher (with the context) sample and the student
learn the teacher's distribution (forward KL, over the full vocabulary unless ``kl_top_k`` is set);
``sft`` fine-tunes on the teacher's samples.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from peft import LoraConfig, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import envs
from agents.agent import Agent, Context, with_context, without_context
from agents.hf_backend import DEFAULT_PROMPT_CACHE_TOKENS, HFBackend, shared_prefix_length
from agents.llm import LLM, SamplingParams
from agents.records import Episode, Message
from agents.rollout import Task, collect_episodes
from common.chat import chat_prompt_ids
from distill.config import DistillConfig
from distill.losses import (
    LossOutput,
    PerTokenLoss,
    chunked_loss,
    forward_kl_from_log_probs,
    reverse_kl_from_log_probs,
    token_nll_from_log_probs,
)
from distill.sequences import Decoder, pack, prefix_tensor, shared_prefix_hidden

if TYPE_CHECKING:
    from agents.vllm_backend import VLLMBackend


@dataclass
class Sample:
    """One reply to learn from: the prompt without and with the context, and the reply's token ids."""

    student_messages: list[Message]
    teacher_messages: list[Message]
    reply_ids: list[int]


def per_token_loss(config: DistillConfig) -> PerTokenLoss:
    """The per-token loss of ``config.method`` on log-probs at ``loss_temperature(config)`` (see
    ``distill.losses``). Without ``topk_mode``, a top-k is renormalised for opcd and given a tail bucket for
    offpolicy (whose full-vocabulary probabilities it keeps)."""
    top_k = config.kl_top_k or None
    if config.method == "opcd":
        kl = partial(reverse_kl_from_log_probs, top_k=top_k, topk_mode=config.topk_mode or "renormalize")
        return lambda student, teacher, targets: kl(student, teacher)
    if config.method == "offpolicy":
        kl = partial(forward_kl_from_log_probs, top_k=top_k, topk_mode=config.topk_mode or "tail")
        return lambda student, teacher, targets: kl(student, teacher)
    if config.method == "sft":
        return lambda student, teacher, targets: token_nll_from_log_probs(student, targets)
    raise ValueError(f"unknown method {config.method!r}")


def loss_temperature(config: DistillConfig) -> float:
    """The temperature both sides' logits are divided by in the loss: the sampling one for the KL methods,
    1 for sft (a plain likelihood). The logged student entropy is at this temperature too."""
    return 1.0 if config.method == "sft" else config.temperature


def make_accelerator(device: torch.device | str) -> Accelerator:
    """The process group of ``accelerate launch`` (a group of one otherwise). Precision is ``--dtype``'s alone;
    no buffer broadcast, since processes run different numbers of forward passes (and no buffer is learnt)."""
    return Accelerator(
        cpu=torch.device(device).type == "cpu",
        mixed_precision="no",
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )


def check_same_tokenizer(student: PreTrainedTokenizerBase, teacher: PreTrainedTokenizerBase) -> None:
    """Teacher log-probs are read at the student's token ids: the vocabularies must be identical."""
    if student.get_vocab() != teacher.get_vocab():
        raise ValueError(
            f"the teacher's tokenizer differs from the student's ({len(teacher)} vs {len(student)} tokens): "
            "cross-size distillation needs one tokenizer, e.g. two sizes of one model family"
        )


class Distiller:
    """Holds the student (LoRA by default), the teacher, the optimizer, and runs steps."""

    def __init__(
        self,
        config: DistillConfig,
        student: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        context: Context,
        teacher: PreTrainedModel | None = None,
        teacher_tokenizer: PreTrainedTokenizerBase | None = None,
        accelerator: Accelerator | None = None,
    ) -> None:
        self.config, self.tokenizer, self.context = config, tokenizer, context
        self.device = student.device  # every tensor the models read is packed here
        self.accelerator = accelerator or make_accelerator(self.device)
        torch.manual_seed(config.seed)
        if teacher is not None:
            check_same_tokenizer(tokenizer, teacher_tokenizer or tokenizer)
        elif not config.uses_lora and config.teacher_mode == "frozen":
            teacher = _frozen_copy(student)
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        if config.uses_lora:
            lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules="all-linear", lora_dropout=0.0)
            student = get_peft_model(student, lora)
        self.student = student
        # the student's forward pass with gradient: under data parallelism, DDP syncs its gradients
        self.decoder = self.accelerator.prepare_model(Decoder(student), device_placement=False)
        self.trainable = [p for p in student.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.per_token = per_token_loss(config)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.step_count = 0
        self._vllm: VLLMBackend | None = None

    # -- the models behind each role ----------------------------------------------------------------

    @contextmanager
    def teacher_model(self) -> Iterator[PreTrainedModel]:
        """The teacher's weights: a separate frozen model, the student with LoRA disabled, or the live student."""
        if self.teacher is not None:
            yield self.teacher
        elif self.config.teacher_mode == "live":
            yield self.student
        else:
            with self.student.disable_adapter():
                yield self.student

    def llm(self, model: PreTrainedModel) -> LLM:
        """``model`` as an LLM for one sampling or evaluation pass, during which its weights stay fixed: its
        kept prompt rows (the next turn's prefix) die with it, before the next optimizer step."""
        return HFBackend.from_model(
            model, self.tokenizer, name=self.config.model, prompt_cache_tokens=DEFAULT_PROMPT_CACHE_TOKENS
        )

    def student_sampler(self, step: int) -> LLM:
        """The student's current weights as an LLM: in-process (hf), or synced into vLLM as a LoRA adapter
        (saved over this process's previous one, which vLLM read when it last sampled), in ``config.dtype``."""
        if self.config.backend == "hf":
            return self.llm(self.student)
        if self._vllm is None:
            from agents.vllm_backend import VLLMBackend, max_lora_rank  # optional: vLLM's own environment

            self._vllm = VLLMBackend(
                self.config.model, dtype=self.config.dtype, enable_lora=True,
                max_lora_rank=max_lora_rank(self.config.lora_r), gpu_memory_utilization=self.config.vllm_memory_fraction,
            )
        folder = self.config.out_dir / "vllm-sync" / f"process-{self.accelerator.process_index}"
        self.student.save_pretrained(folder, save_embedding_layers=False)
        self._vllm.use_adapter(str(folder), version=step + 1)
        return self._vllm

    def sampling(self, step: int) -> SamplingParams:
        """The step's sampling parameters; the seed is a function of (seed, step, rank) only."""
        return SamplingParams(
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            seed=(self.config.seed * 1_000_003 + step) * 64 + self.accelerator.process_index,
        )

    # -- one step -------------------------------------------------------------------------------------

    def train_tasks(self, step: int) -> list[Task]:
        """The step's tasks: a function of (seed, step) only, so a resumed run replays the same ones."""
        size = envs.make(self.config.env).split_sizes["train"]
        rng = np.random.default_rng([self.config.seed, step, self.accelerator.process_index])
        return [Task("train", int(i)) for i in rng.integers(size, size=self.config.episodes_per_step)]

    def episodes(self, agent: Agent, step: int) -> list[Episode]:
        return list(
            collect_episodes(
                lambda: envs.make(self.config.env), agent, self.train_tasks(step),
                env_id=self.config.env, batch_size=self.config.episodes_per_step,
            )
        )

    def sample(self, step: int) -> list[Sample]:
        """OPCD: the student samples without the context. Baselines: the teacher samples with it."""
        params = self.sampling(step)
        if self.config.method == "opcd":
            agent = Agent(self.student_sampler(step), params, None, self.config.max_prompt_tokens)
            episodes = self.episodes(agent, step)
            return [
                Sample(t.prompt_messages, with_context(t.prompt_messages, self.context), t.reply_token_ids)
                for e in episodes for t in e.turns if t.reply_token_ids
            ]
        with self.teacher_model() as teacher:
            agent = Agent(self.llm(teacher), params, self.context, self.config.max_prompt_tokens)
            episodes = self.episodes(agent, step)
        return [
            Sample(without_context(t.prompt_messages, self.context), t.prompt_messages, t.reply_token_ids)
            for e in episodes for t in e.turns if t.reply_token_ids
        ]

    def loss(self, samples: list[Sample]) -> LossOutput:
        """Score ``samples``: the teacher with the context (no grad), the student without (with grad)."""
        replies = [s.reply_ids for s in samples]
        teacher = None
        if self.config.method != "sft":
            teacher_prompts = [chat_prompt_ids(self.tokenizer, s.teacher_messages) for s in samples]
            with self.teacher_model() as model:
                hidden, packed = shared_prefix_hidden(model, teacher_prompts, replies, self.pad_id)
                teacher = (hidden, packed.predict_mask, model.get_output_embeddings())
        prompts = [chat_prompt_ids(self.tokenizer, s.student_messages) for s in samples]
        # The student's rows share a prefix too (the env's instructions): it runs once, with gradient.
        length = shared_prefix_length(prompts)
        student = pack(prompts, replies, self.pad_id, offset=length, device=self.device)
        return chunked_loss(
            self.per_token,
            self.decoder(student.input_ids, student.attention_mask, prefix_tensor(prompts, length, self.device)),
            student.predict_mask,
            self.student.get_output_embeddings(),
            student.targets,
            teacher,
            reduction=self.config.reduction,
            chunk_size=self.config.loss_chunk_size,
            temperature=loss_temperature(self.config),
        )

    def backward(self, samples: list[Sample]) -> LossOutput:
        """The loss of every process's samples together (a mean over all their tokens, or rows), its gradient
        accumulated in passes of at most ``max_batch_tokens``; ``token_loss`` and entropies are this process's."""
        lengths = [len(chat_prompt_ids(self.tokenizer, s.student_messages)) + len(s.reply_ids) for s in samples]
        # What the reduction averages over: reply tokens (token_mean) or rows (sequence_mean), in all processes.
        sizes = [len(s.reply_ids) if self.config.reduction == "token_mean" else 1 for s in samples]
        total = self.accelerator.reduce(torch.tensor(float(sum(sizes)), device=self.device), reduction="sum")
        processes = self.accelerator.num_processes
        groups = micro_batches(lengths, self.config.max_batch_tokens)
        loss, parts = torch.zeros((), device=self.device), []
        for i, group in enumerate(groups):
            # Each pass's loss is a mean over its own tokens (rows): weight it by its share of the union's;
            # DDP syncs in the last pass only and averages over processes, hence the factor.
            share = sum(sizes[j] for j in group) / total
            last = i == len(groups) - 1
            with nullcontext() if last else self.accelerator.no_sync(self.decoder):
                out = self.loss([samples[j] for j in group])
                (out.loss * share * processes).backward()
            loss += share * out.loss.detach()
            parts.append(out)
        token_loss = torch.cat([o.token_loss for o in parts])
        loss = self.accelerator.reduce(loss, reduction="sum")
        return LossOutput(loss, token_loss, torch.cat([o.student_entropy for o in parts]))

    def step(self) -> dict[str, float]:
        """Sample, score, one optimizer step; returns the step's metrics."""
        started = time.perf_counter()
        samples = self.sample(self.step_count)
        if not samples:
            raise RuntimeError(f"step {self.step_count}: the sampler produced no reply tokens to learn from")
        sampled = time.perf_counter()
        self.student.train()
        self.optimizer.zero_grad(set_to_none=True)
        out = self.backward(samples)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.config.grad_clip)
        self.optimizer.step()
        self.student.eval()
        self.step_count += 1
        reply_tokens = out.token_loss.numel()
        per_token = "nll" if self.config.method == "sft" else "kl"  # what token_loss holds
        return {
            "loss": out.loss.item(),
            f"{per_token}_token_mean": out.token_loss.mean().item(),
            f"{per_token}_negative_fraction": (out.token_loss < 0).float().mean().item(),
            "student_entropy": out.student_entropy.mean().item(),
            "grad_norm": float(grad_norm),
            "samples": float(len(samples)),
            "reply_tokens": float(reply_tokens),
            "seconds_sample": sampled - started,
            "seconds_update": time.perf_counter() - sampled,
        }


def micro_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Row indices grouped longest first, each group's padded size (rows × its longest row) within
    ``max_tokens``; a row longer than that is a group of its own."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= max_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A frozen duplicate of ``model`` (the teacher of full fine-tuning)."""
    return copy.deepcopy(model).eval().requires_grad_(False)
