"""GLIDE's text tokenizer: GPT-2 byte-level BPE with GLIDE's lowercasing and padding.

This is the tokenizer DiffHOI's prior was trained with (``glide_text2im/tokenizer/bpe.py``),
re-implemented here over the same data files (``data/glide_bpe/``, MIT, see its LICENSE):

- the text is lowercased, split by GPT-2's pre-tokenizer pattern, each piece is mapped byte by
  byte to printable unicode characters and merged by the BPE merge ranks;
- no start or end token is added;
- for the network the ids are cut to ``text_ctx`` (128) and right-padded with the end token
  ``<|endoftext|>`` = 50256; the mask is True on real tokens. The empty prompt gives all-50256
  and an all-False mask (DiffHOI's unconditional branch).
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import regex
import torch

DATA_DIR = Path(__file__).resolve().parent / "data" / "glide_bpe"
TEXT_CTX = 128

# GPT-2's pre-tokenizer (contractions, letter runs, digit runs, other symbols, whitespace).
# GLIDE lowercases first, so the case-sensitive contraction alternatives are harmless.
_PRETOKENIZE = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


def byte_to_unicode_table() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Printable latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves; the remaining 68
    bytes (controls, space, ...) map, in byte order, to code points 256, 257, ... so that BPE
    never sees whitespace or control characters.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    next_code = 256
    for b in range(256):
        if b not in table:
            table[b] = chr(next_code)
            next_code += 1
    return table


class GlideTokenizer:
    """Byte-level BPE over a vocabulary (``token string -> id``) and ranked merges."""

    def __init__(self, vocabulary: dict[str, int], merges: Sequence[tuple[str, str]]):
        self.vocabulary = vocabulary
        self.id_to_token = {i: s for s, i in vocabulary.items()}
        self.merge_rank = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_to_char = byte_to_unicode_table()
        self.char_to_byte = {c: b for b, c in self.byte_to_char.items()}
        self._piece_cache: dict[str, tuple[str, ...]] = {}

    @property
    def n_vocab(self) -> int:
        return len(self.vocabulary)

    @property
    def end_token(self) -> int:
        """``<|endoftext|>``, the last id; GLIDE pads with it."""
        return self.n_vocab - 1

    def _merge_piece(self, piece: str) -> tuple[str, ...]:
        """BPE on one pre-token (already in byte-unicode form): repeatedly merge the adjacent
        pair with the lowest merge rank (all its non-overlapping occurrences, left to right)."""
        cached = self._piece_cache.get(piece)
        if cached is not None:
            return cached
        symbols = list(piece)
        while len(symbols) > 1:
            ranked = [
                (self.merge_rank[pair], pair)
                for pair in zip(symbols[:-1], symbols[1:])
                if pair in self.merge_rank
            ]
            if not ranked:
                break
            first, second = min(ranked)[1]
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        result = tuple(symbols)
        self._piece_cache[piece] = result
        return result

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (lowercased first, as GLIDE does); no start/end tokens."""
        ids: list[int] = []
        for piece in _PRETOKENIZE.findall(text.lower()):
            mapped = "".join(self.byte_to_char[b] for b in piece.encode("utf-8"))
            ids.extend(self.vocabulary[s] for s in self._merge_piece(mapped))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Inverse of ``encode`` up to lowercasing (invalid utf-8 is replaced)."""
        chars = "".join(self.id_to_token[int(i)] for i in ids)
        return bytes(self.char_to_byte[c] for c in chars).decode("utf-8", errors="replace")

    def padded_tokens_and_mask(
        self, ids: Sequence[int], text_ctx: int = TEXT_CTX
    ) -> tuple[list[int], list[bool]]:
        """Cut ``ids`` to ``text_ctx``, right-pad with ``end_token``; mask is True on real ids."""
        ids = list(ids)[:text_ctx]
        n_pad = text_ctx - len(ids)
        return ids + [self.end_token] * n_pad, [True] * len(ids) + [False] * n_pad

    def tokens_and_mask(
        self,
        texts: Sequence[str],
        text_ctx: int = TEXT_CTX,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch of prompts -> ``tokens (B, text_ctx) int64``, ``mask (B, text_ctx) bool``.

        An empty string gives the unconditional (all padding, all-False) entry.
        """
        rows = [self.padded_tokens_and_mask(self.encode(t), text_ctx) for t in texts]
        tokens = torch.tensor([r[0] for r in rows], dtype=torch.int64, device=device)
        mask = torch.tensor([r[1] for r in rows], dtype=torch.bool, device=device)
        return tokens.reshape(len(rows), text_ctx), mask.reshape(len(rows), text_ctx)


@lru_cache(maxsize=None)
def get_glide_tokenizer(data_dir: str | None = None) -> GlideTokenizer:
    """The GLIDE tokenizer from ``encoder.json.gz`` / ``vocab.bpe.gz`` (cached per process)."""
    folder = Path(data_dir) if data_dir is not None else DATA_DIR
    with gzip.open(folder / "encoder.json.gz", "rt", encoding="utf-8") as f:
        vocabulary = json.load(f)
    with gzip.open(folder / "vocab.bpe.gz", "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # First line is the "#version" header, the file ends with a newline.
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
    return GlideTokenizer(vocabulary, merges)
