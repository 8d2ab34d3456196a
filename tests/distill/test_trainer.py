"""The OPCD trainer on tiny real models: a step lowers the loss, a context fact is internalised,
resume replays the same step, cross-size teachers, the off-policy and SFT baselines."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

import envs
from agents.agent import Context, build_messages
from common.chat import chat_prompt_ids
from distill.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from distill.config import DistillConfig
from distill.losses import forward_kl, log_probs
from distill.trainer import Distiller, micro_batches, per_token_loss
from envs.base import TextEnv

QUESTION = "Which colour is the secret?"
FACT = Context("The secret colour is blue.", "knowledge", id="fact")
ANSWER = " blue"
DECOY = " red"


class SecretEnv(TextEnv):
    """One question whose answer only the context holds."""

    split_sizes = {"train": 4, "validation": 2, "test": 2}
    instructions = "Answer in one word."

    def _reset_task(self, split: str, index: int) -> tuple[str, dict[str, Any]]:
        return QUESTION, {"task_id": "secret"}

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        won = "blue" in action.lower()
        return "done", float(won), True, False, {"task_id": "secret", "success": won}

    def parse_action(self, reply: str) -> str:
        return reply.strip()

    def reference_solution(self) -> list[str]:
        return ["blue"]


@pytest.fixture(scope="module", autouse=True)
def secret_env() -> None:
    envs.register("secret", SecretEnv, override=True)
    yield
    envs.unregister("secret")


def config(**overrides: Any) -> DistillConfig:
    base = dict(env="secret", model="tiny", episodes_per_step=4, max_new_tokens=3, temperature=1.0, lr=5e-3, lora_r=8, seed=0)
    return DistillConfig(**{**base, **overrides})


def prompt(tokenizer: PreTrainedTokenizerBase, context: Context | None) -> list[int]:
    return chat_prompt_ids(tokenizer, build_messages(SecretEnv.instructions, [], QUESTION, context))


def answer_logprob(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, context: Context | None, word: str) -> float:
    """log p(first token of ``word`` | prompt) under ``model``."""
    ids = prompt(tokenizer, context)
    token = tokenizer(word, add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    return torch.log_softmax(logits.float(), -1)[token].item()


@pytest.fixture(scope="module")
def context_sensitive_model(tiny_llama: LlamaForCausalLM, default_tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A tiny model taught that the answer is 'blue' WITH the fact in context and 'red' without it."""
    model = copy.deepcopy(tiny_llama).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rows = []
    for context, word in ((FACT, ANSWER), (None, DECOY)):
        ids = prompt(default_tokenizer, context)
        rows.append((ids, default_tokenizer(word, add_special_tokens=False)["input_ids"][0]))
    for _ in range(60):
        loss = sum(
            torch.nn.functional.cross_entropy(model(input_ids=torch.tensor([ids])).logits[0, -1:], torch.tensor([target]))
            for ids, target in rows
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert answer_logprob(model, default_tokenizer, FACT, ANSWER) > -0.5
    assert answer_logprob(model, default_tokenizer, None, ANSWER) < -3
    return model


def test_one_step_lowers_the_loss_on_a_fixed_batch(context_sensitive_model, default_tokenizer) -> None:
    distiller = Distiller(config(), copy.deepcopy(context_sensitive_model), default_tokenizer, FACT)
    samples = distiller.sample(0)
    assert samples and all(s.reply_ids for s in samples)
    before = distiller.loss(samples).loss.item()
    distiller.optimizer.zero_grad()
    distiller.loss(samples).loss.backward()
    distiller.optimizer.step()
    with torch.no_grad():
        after = distiller.loss(samples).loss.item()
    assert before > 0 and after < before


def test_opcd_internalises_the_context_fact(context_sensitive_model, default_tokenizer) -> None:
    distiller = Distiller(config(), copy.deepcopy(context_sensitive_model), default_tokenizer, FACT)
    start = answer_logprob(distiller.student, default_tokenizer, None, ANSWER)
    for _ in range(25):
        metrics = distiller.step()
        assert metrics["loss"] >= 0 and torch.isfinite(torch.tensor(metrics["loss"]))
    end = answer_logprob(distiller.student, default_tokenizer, None, ANSWER)
    assert end > start + 2.0, f"log p(answer | no context) went {start:.2f} -> {end:.2f}"
    # the teacher (adapters disabled) is untouched
    with distiller.teacher_model() as teacher:
        assert answer_logprob(teacher, default_tokenizer, None, ANSWER) == pytest.approx(start, abs=1e-4)


def test_resume_replays_the_same_next_step(context_sensitive_model, default_tokenizer, tmp_path) -> None:
    cfg = config(out_dir=tmp_path)
    uninterrupted = Distiller(cfg, copy.deepcopy(context_sensitive_model), default_tokenizer, FACT)
    for _ in range(2):
        uninterrupted.step()
    save_checkpoint(uninterrupted, tmp_path, {"run_id": "r"})
    expected = uninterrupted.step()

    resumed = Distiller(cfg, copy.deepcopy(context_sensitive_model), default_tokenizer, FACT)
    extra = load_checkpoint(resumed, latest_checkpoint(tmp_path))
    assert extra == {"run_id": "r"} and resumed.step_count == 2
    got = resumed.step()
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    for a, b in zip(uninterrupted.trainable, resumed.trainable):
        assert torch.allclose(a, b, atol=1e-6)


def test_cross_size_teacher_and_tokenizer_mismatch(context_sensitive_model, tiny_llama, default_tokenizer) -> None:
    teacher = copy.deepcopy(context_sensitive_model)
    distiller = Distiller(config(lora_r=0, lr=1e-3), copy.deepcopy(tiny_llama), default_tokenizer, FACT, teacher, default_tokenizer)
    assert distiller.teacher is teacher and not any(p.requires_grad for p in teacher.parameters())
    assert distiller.step()["loss"] > 0
    other = copy.deepcopy(default_tokenizer)
    other.add_tokens(["<not-in-the-student>"])
    with pytest.raises(ValueError, match="tokenizer"):
        Distiller(config(), copy.deepcopy(tiny_llama), default_tokenizer, FACT, teacher, other)


@pytest.mark.parametrize("method", ["offpolicy", "sft"])
def test_baselines_learn_from_teacher_samples(method, context_sensitive_model, default_tokenizer) -> None:
    distiller = Distiller(config(method=method, temperature=0.7), copy.deepcopy(context_sensitive_model), default_tokenizer, FACT)
    samples = distiller.sample(0)
    # the teacher sampled WITH the context; the student's view has it removed
    assert all(FACT.text in s.teacher_messages[0]["content"] for s in samples)
    assert all(FACT.text not in s.student_messages[0]["content"] for s in samples)
    start = answer_logprob(distiller.student, default_tokenizer, None, ANSWER)
    metrics = [distiller.step() for _ in range(10)]
    assert answer_logprob(distiller.student, default_tokenizer, None, ANSWER) > start + 1.0
    named, other = ("nll", "kl") if method == "sft" else ("kl", "nll")  # sft's per-token loss is a likelihood, not a KL
    assert f"{named}_token_mean" in metrics[0] and f"{other}_token_mean" not in metrics[0]


def test_offpolicy_sees_the_student_mass_outside_the_teachers_top_k() -> None:
    """The teacher's mass is on 16 tokens; the student has their shape but only 3% of its mass there (97% on
    tokens outside the teacher's top 256). Renormalised inside a top-k the two look alike; they are not."""
    vocab, k = 2000, 16
    teacher = torch.full((1, vocab), -40.0)
    teacher[0, :k] = torch.linspace(0.0, 2.0, k)
    teacher[0, k:256] = -30.0  # the rest of the teacher's top 256: next to no mass, the student's even less
    student = teacher.clone()
    student[0, k:256] = -40.0
    inside = student[0, :k].exp().sum()
    student[0, 256:] = (inside * 97 / 3 / (vocab - 256)).log()
    assert torch.softmax(student, -1)[0, :k].sum().item() == pytest.approx(0.03, rel=1e-3)

    def loss(**overrides: Any) -> float:
        c = config(method="offpolicy", **overrides)
        s_log, t_log = log_probs(student, c.temperature), log_probs(teacher, c.temperature)
        return per_token_loss(c)(s_log, t_log, torch.zeros(1)).item()

    log_ratio = -torch.log(torch.tensor(0.03)).item()  # ~3.5: KL(teacher || student) over the full vocabulary
    assert loss() == pytest.approx(forward_kl(student, teacher).item()) == pytest.approx(log_ratio, rel=0.01)
    assert loss(kl_top_k=16) == pytest.approx(log_ratio, rel=0.01)  # the tail bucket holds the student's 97%
    assert loss(kl_top_k=16, topk_mode="renormalize") < 1e-4  # what the top-k alone sees


def test_live_teacher_is_the_student_itself(context_sensitive_model, default_tokenizer) -> None:
    distiller = Distiller(config(teacher_mode="live"), copy.deepcopy(context_sensitive_model), default_tokenizer, FACT)
    with distiller.teacher_model() as teacher:
        assert teacher is distiller.student
    assert distiller.step()["loss"] >= 0


def test_micro_batches_bound_padded_tokens() -> None:
    assert micro_batches([10, 40, 20, 30], 60) == [[1], [3, 2], [0]]  # 30 + 30 padded, then 10 alone
    assert micro_batches([10, 40, 20, 30], 1000) == [[1, 3, 2, 0]]
    assert micro_batches([500, 5], 100) == [[0], [1]]  # a row over the budget still runs, alone


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_mean"])
def test_passes_of_few_tokens_give_the_whole_batchs_gradient(reduction, context_sensitive_model, default_tokenizer) -> None:
    whole, passes = (
        Distiller(config(reduction=reduction, max_batch_tokens=budget), copy.deepcopy(context_sensitive_model), default_tokenizer, FACT)
        for budget in (100_000, 1)  # one pass, then one pass per sample
    )
    samples = whole.sample(0)
    assert len(samples) == 4
    expected, got = whole.backward(samples), passes.backward(samples)
    assert got.loss.item() == pytest.approx(expected.loss.item(), rel=1e-5)
    assert got.token_loss.sum().item() == pytest.approx(expected.token_loss.sum().item(), rel=1e-5)
    for a, b in zip(whole.trainable, passes.trainable):
        assert a.grad is not None and torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-5)
