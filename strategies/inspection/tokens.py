"""Token ids back to the text pieces a reader sees, one piece per token.

Decoding each id alone goes wrong in two ways: SentencePiece decoders drop a token's leading space
at the start of a text, and a character split over several byte-level tokens decodes to U+FFFD
until its last byte arrives. So each piece is what decoding the token after a few tokens of context
adds to the context's own decoding (incremental detokenisation, as serving engines stream text),
and a token that completes no character yet gets an empty piece, its bytes showing with the token
that completes the character.
"""
from __future__ import annotations

CONTEXT = 4  # tokens of left context; enough for every merge rule we know of


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """One string per id; their concatenation is the decoded text (special tokens kept)."""
    ids = [int(i) for i in ids]
    pieces: list[str] = []
    prefix = read = 0  # ids[prefix:read]: context already shown; ids[read:t+1]: pending
    decode = _decoder(tokenizer)
    for t in range(len(ids)):
        shown = decode(ids[prefix:read])
        full = decode(ids[prefix:t + 1])
        if len(full) > len(shown) and not full.endswith("\ufffd") and full.startswith(shown):
            pieces.append(full[len(shown):])
            read = t + 1
            prefix = max(0, read - CONTEXT)
        else:
            pieces.append("")
    if read < len(ids):  # a trace that ends inside a character: show what there is
        pieces[-1] = decode(ids[prefix:])[len(decode(ids[prefix:read])):]
    return pieces


def _decoder(tokenizer):
    """Fast decoding of a short id list (the Rust tokenizer when there is one: the Python
    wrapper's per-call overhead dominates on 64k tokens)."""
    rust = getattr(tokenizer, "_tokenizer", None)
    if rust is not None and hasattr(rust, "decode"):
        return lambda ids: rust.decode(ids, skip_special_tokens=False)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=False)


def special_ids(tokenizer) -> set[int]:
    """Ids of special tokens (EOS and friends), shown dimmed in the report."""
    return set(getattr(tokenizer, "all_special_ids", None) or [])
