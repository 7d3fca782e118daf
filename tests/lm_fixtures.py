"""Tiny random-weight Hugging Face checkpoints (GPT-2, GPT-NeoX, Llama) and a BPE tokenizer, made here.

Nothing is downloaded: the tokenizer is trained by ``tokenizers`` on a few sentences and the
models are random ``transformers`` models saved with ``save_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

import torch

SENTENCES = [
    "Alice plays the sport of tennis.", "Bob lives in the city of Paris.", "The ball is red and the sky is blue.",
    "Carol plays for the team of the Lions.", "Paris is a city in the country of France.",
]
FAMILIES = ("gpt2", "neox", "llama")
# for each family: the decoder layers and, in a layer, the attention output projection, the MLP
# and the MLP's output projection (whose input is the neurons' activations)
HF_PATHS = {
    "gpt2": ("transformer.h", "attn.c_proj", "mlp", "mlp.c_proj"),
    "neox": ("gpt_neox.layers", "attention.dense", "mlp", "mlp.dense_4h_to_h"),
    "llama": ("model.layers", "self_attn.o_proj", "mlp", "mlp.down_proj"),
}


def make_tokenizer() -> object:
    """A byte-level BPE tokenizer (258 tokens) trained on SENTENCES, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=280, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(SENTENCES * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def make_model(family: str, vocab: int) -> torch.nn.Module:
    """A random 2-layer model of ``family`` with d_model 32, 4 heads (Llama: 2 key/value heads)."""
    import transformers as tf

    torch.manual_seed({"gpt2": 0, "neox": 1, "llama": 2}[family])
    if family == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=4, initializer_range=0.2,
                                                bos_token_id=0, eos_token_id=0))
    if family == "neox":
        return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(
            vocab_size=vocab, max_position_embeddings=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, rotary_pct=0.5, initializer_range=0.2, bos_token_id=0, eos_token_id=0))
    return tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=vocab, max_position_embeddings=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, initializer_range=0.2, bos_token_id=0, eos_token_id=0))


def make_checkpoints(root: Path) -> dict[str, Path]:
    """Save one tiny checkpoint per family under ``root``; returns family -> directory."""
    tok = make_tokenizer()
    out = {}
    for family in FAMILIES:
        path = root / family
        make_model(family, len(tok)).save_pretrained(path)
        tok.save_pretrained(path)
        out[family] = path
    return out
