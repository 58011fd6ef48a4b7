"""A tiny randomly initialised model with a byte-level tokenizer, built in milliseconds.

For tests and plumbing (`--model tiny-random`, `--model tiny-random:qwen3`): real architectures,
real chat template and special tokens, no weights to download. Its vocabulary is padded past the
tokenizer's size on purpose, as real checkpoints often are.
"""
from __future__ import annotations

ARCHS = ("llama", "qwen2", "qwen3", "mistral")
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS[0], eos_token=SPECIALS[1],
                                 unk_token=SPECIALS[2], pad_token=SPECIALS[2])
    hf.add_special_tokens({"additional_special_tokens": SPECIALS})
    hf.chat_template = CHAT_TEMPLATE
    return hf


def tiny_model(arch: str = "llama", seed: int = 0, layers: int = 2, hidden: int = 64, vocab_pad: int = 13,
               tokenizer=None):
    """A random model of `arch` sized for tests; logits are made peaked so greedy ties are rare."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = tokenizer or byte_tokenizer()
    kw = dict(vocab_size=len(tok) + vocab_pad, hidden_size=hidden, intermediate_size=2 * hidden,
              num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
              max_position_embeddings=512, tie_word_embeddings=True, initializer_range=0.2,
              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if arch == "mistral":
        kw["sliding_window"] = None
    config = AutoConfig.for_model(arch, **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    if arch == "qwen2":  # q/k/v biases exist but start at zero; make them matter
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok
