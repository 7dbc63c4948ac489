"""A tiny random Llama with a chat template, built locally so the LLM tests need no download.

Shapes are chosen for vLLM's CPU backend: float32 (portable), head_dim 64 (head_dim 16 is not
supported by its CPU attention). The output rows of the special tokens (EOS among them) and of
the bytes that are not printable ASCII are zeroed, so their logit is always 0 while the best of
~150 random others is positive: greedy decoding never stops early and every token is text (no
half UTF-8 characters that vLLM holds back), so tests get long, deterministic streams of deltas.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
MAX_POSITIONS = 2048


def make_tiny_llama(out: Path, *, hidden: int = 128, layers: int = 2) -> Path:
    """Write a float32 Llama (by default 2 layers, hidden 128) and its byte-level BPE tokenizer into
    `out`. More layers and width make every token slower: a test that must outlast a stream uses them."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ["hello chat welcome to the avatar stream " * 20, "the quick brown fox jumps over the lazy dog"] * 50
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).to(torch.float32)
    silent = [i for i in range(len(fast)) if not _is_text(fast.decode([i])) or i in fast.all_special_ids]
    with torch.no_grad():
        model.lm_head.weight[silent] = 0.0
    model.save_pretrained(out)
    return out


def _is_text(piece: str) -> bool:
    return bool(piece) and piece.isascii() and piece.isprintable()
