"""Hand-built tiny models for tests (the fixtures that use them are in tests/conftest.py)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from common.chat import chat_prompt_ids

WRITER_ITEM = "Check every step before answering."
WRITER_LINE = f"- EXPERIENCE ITEM: {WRITER_ITEM}"


def bigram_writer(tokenizer: PreTrainedTokenizerBase, text: str) -> LlamaForCausalLM:
    """A Llama that writes ``text`` then ends its turn, whatever the conversation (greedy or sampled)."""
    start = chat_prompt_ids(tokenizer, [{"role": "user", "content": "x"}])[-1]
    chain = [start, *tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    assert len(set(chain[:-1])) == len(chain) - 1, "a bigram chain needs distinct tokens"
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=8192, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:  # attention and MLP add nothing: the residual is the token's embedding
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for i, (token, following) in enumerate(zip(chain, chain[1:])):
            model.model.embed_tokens.weight[token, i] = 1.0
            model.lm_head.weight[following, i] = 100.0
    return model
