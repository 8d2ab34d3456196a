"""Prompts as the model sees them: a conversation rendered with the tokenizer's own chat template."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from transformers import PreTrainedTokenizerBase


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, conversation: Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of ``conversation`` rendered with the tokenizer's chat template plus the generation prompt."""
    text = tokenizer.apply_chat_template(list(conversation), add_generation_prompt=True, tokenize=False)
    # The template writes its own special tokens (e.g. <|im_start|>); adding BOS again would double it.
    return tokenizer(text, add_special_tokens=False)["input_ids"]
