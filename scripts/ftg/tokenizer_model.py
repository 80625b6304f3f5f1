"""Gemma's SentencePiece file, tokenizer.model, written from a vocabulary's pieces, scores and token types.

Why: the Hub's Gemma 3 and Gemma-3n folders ship tokenizer.model beside tokenizer.json, and llama.cpp's converter
reads it to write a SentencePiece GGUF vocabulary (tokenizer.ggml.model "llama", the 256 byte tokens <0x00>..<0xFF>
typed BYTE). Without it the converter falls back to a GPT-2 style vocabulary whose byte tokens are plain words, and
llama.cpp then prints "<0xF0><0x9F><0xA6><0xA1>" where HF prints 🦡. transformers 5 saves no tokenizer.model, so the
demo folder and our merged folders need one written.

Two sources: a GGUF's own vocabulary (the bundled Hub GGUF of the demo: exact pieces, scores, types), or a folder's
tokenizer.json (a Gemma BPE vocabulary made from Gemma's SentencePiece model, whose scores fall with the id).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TOKENIZER_MODEL = "tokenizer.model"

# SentencePiece's piece types; llama.cpp's GGUF token types use the same numbers (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
BYTE_PIECE = re.compile(r"^<0x[0-9A-F]{2}>$")
SPACE_RUN_PIECE = re.compile(r"^▁{2,}$")
"""Gemma's pieces of 2-31 spaces are user-defined (matched whole, as the Hub's GGUF does), not merged."""
ADDED_TOKEN_SCORE = -1000.0
"""What Gemma 3's tokenizer.model (and llama.cpp's converter) gives control and user-defined pieces."""


def write_tokenizer_model(path: Path, pieces: list[str], scores: list[float], types: list[int]) -> Path:
    """Write a Gemma-style SentencePiece BPE model (byte fallback on) and load it back with sentencepiece to be sure
    it is valid; returns `path`.

    The normalizer and trainer fields are Gemma 3's: identity normalization (no NFKC), no dummy prefix, spaces kept
    as they are (escaped to ▁), digits split, whitespace-only pieces allowed, <pad> 0, <eos> 1, <bos> 2, <unk> 3.
    """
    from sentencepiece import SentencePieceProcessor
    from sentencepiece import sentencepiece_model_pb2 as spm

    model = spm.ModelProto()
    for piece, score, kind in zip(pieces, scores, types, strict=True):
        entry = model.pieces.add()
        entry.piece, entry.score, entry.type = piece, float(score), int(kind)
    trainer = model.trainer_spec
    trainer.model_type = spm.TrainerSpec.BPE
    trainer.vocab_size = len(pieces)
    trainer.byte_fallback = True
    trainer.split_digits = True
    trainer.allow_whitespace_only_pieces = True
    trainer.split_by_whitespace = True
    trainer.treat_whitespace_as_suffix = False
    trainer.pad_id, trainer.eos_id, trainer.bos_id, trainer.unk_id = 0, 1, 2, 3
    trainer.pad_piece, trainer.eos_piece, trainer.bos_piece, trainer.unk_piece = "<pad>", "<eos>", "<bos>", "<unk>"
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = False
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(model.SerializeToString())
    SentencePieceProcessor(model_file=str(partial))  # raises on a model sentencepiece would refuse
    partial.replace(path)
    return path


def added_tokens_decoder(pieces: list[str], types: list[int]) -> dict[str, dict]:
    """tokenizer_config.json's added_tokens_decoder as the Hub's Gemma 3 file has it: every control, unknown and
    user-defined piece, matched on the raw text (normalized false), control and unknown ones special.

    llama.cpp's converter reads it: special ones become CONTROL, the others USER_DEFINED with "▁" turned back into
    spaces, so a run of spaces in the text matches the whitespace piece as it does in the Hub's own GGUF.
    """
    return {str(index): {"content": piece, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": kind != USER_DEFINED}
            for index, (piece, kind) in enumerate(zip(pieces, types)) if kind in (CONTROL, UNKNOWN, USER_DEFINED)}


def gguf_vocabulary(gguf_path: Path) -> tuple[list[str], list[float], list[int]]:
    """The pieces, scores and token types of a GGUF's vocabulary (tokenizer.ggml.tokens / scores / token_type)."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf_path).fields
    pieces = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    # Undo what llama.cpp's converter did to the tokenizer.model it read: user-defined pieces had their "▁" turned
    # into spaces ("▁▁" became "  "), and <unk> became CONTROL because tokenizer_config.json marks it special.
    pieces = [piece.replace(" ", "▁") if kind == USER_DEFINED else piece for piece, kind in zip(pieces, types)]
    unk = fields["tokenizer.ggml.unknown_token_id"].contents() if "tokenizer.ggml.unknown_token_id" in fields else None
    if unk is not None:
        types[unk] = UNKNOWN
    return pieces, fields["tokenizer.ggml.scores"].contents(), types


def tokenizer_json_vocabulary(folder: Path) -> tuple[list[str], list[float], list[int]]:
    """Pieces, scores and types from a Gemma tokenizer.json (a BPE made from Gemma's SentencePiece model).

    Its merges were made in the order of the SentencePiece scores, which for Gemma fall by one per id; so score =
    -id keeps the same merge order (SentencePiece BPE only compares scores). Byte pieces score 0 and added tokens
    ADDED_TOKEN_SCORE, as in Gemma 3's own tokenizer.model; added tokens marked special are CONTROL, others and the
    runs of spaces (SPACE_RUN_PIECE) USER_DEFINED.
    """
    data = json.loads((Path(folder) / "tokenizer.json").read_text(encoding="utf-8"))
    if data["model"]["type"] != "BPE" or not data["model"].get("byte_fallback"):
        raise ValueError(f"{folder}/tokenizer.json is not a byte-fallback BPE vocabulary like Gemma's")
    by_id = {index: piece for piece, index in data["model"]["vocab"].items()}
    added = {token["id"]: token for token in data.get("added_tokens", [])}
    by_id.update({index: token["content"] for index, token in added.items()})
    size = max(by_id) + 1
    unk = data["model"].get("unk_token")
    pieces, scores, types = [], [], []
    for index in range(size):
        piece = by_id.get(index, f"<unused_id_{index}>")
        if index in added:
            kind, score = (CONTROL if added[index].get("special") else USER_DEFINED), ADDED_TOKEN_SCORE
        elif SPACE_RUN_PIECE.match(piece):
            kind, score = USER_DEFINED, ADDED_TOKEN_SCORE
        elif index not in by_id:
            kind, score = UNUSED, ADDED_TOKEN_SCORE
        elif piece == unk:
            kind, score = UNKNOWN, 0.0
        elif BYTE_PIECE.match(piece):
            kind, score = BYTE, 0.0
        else:
            kind, score = NORMAL, -float(index)
        if piece == unk and kind == CONTROL:  # sentencepiece wants exactly one UNKNOWN piece
            kind = UNKNOWN
        pieces.append(piece)
        scores.append(score)
        types.append(kind)
    return pieces, scores, types
