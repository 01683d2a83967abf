"""RoBERTa sequence classifiers for the text track: tokenizer, model folders and forward pass.

MICO's text models are ``AutoModelForSequenceClassification.from_pretrained(folder,
num_labels=2)`` fine-tunes of roberta-base, stored as a Hugging Face folder: ``config.json``
plus ``pytorch_model.bin`` (a pickled state_dict).  Those files come from the internet, so this
module never calls ``from_pretrained`` (which may unpickle with full rights and contact the hub):
it builds :class:`~transformers.RobertaForSequenceClassification` from the JSON config and loads
the state_dict with ``torch.load(..., weights_only=True)``.

A record is one token batch row: ``input_ids`` and ``attention_mask`` stacked as int64
``[2, max_length]``, so a dataset is one int64 tensor ``[N, 2, max_length]`` that the generic
batching, training and inference code slices like any other (see :func:`forward`).

The tokenizer is roberta-base's byte-level BPE, rebuilt with the ``tokenizers`` library from its
``vocab.json`` and ``merges.txt``: ``<s> tokens </s>`` then ``<pad>`` up to ``max_length``, which
is what ``tokenizer(sentence, padding="max_length", max_length=67)`` returns.  (transformers 5's
``RobertaTokenizerFast(vocab_file=..., merges_file=...)`` silently ignores those files, so the
tokenizer is assembled here from its parts.)  A damaged file tokenizes without an error (an
empty ``merges.txt`` splits every word into bytes), so :func:`check_tokenizer_files` validates
both files first and :func:`load_tokenizer` checks known sentences after.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from mico.fileio import atomic_write, write_text_atomic
from mico.nets import strip_opacus_prefix

#: Hugging Face's file names inside a model folder, in the order a bundle lists them.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "pytorch_model.bin"
MODEL_FILES: tuple[str, ...] = (CONFIG_FILE, WEIGHTS_FILE)

#: Tokenizer files (roberta-base's names).
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_FILES: tuple[str, ...] = (VOCAB_FILE, MERGES_FILE)

#: roberta-base's special tokens, in its id order.
SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

#: roberta-base's vocabulary size, and its published encodings of two sentences (the
#: ``RobertaTokenizer`` docstring of transformers): a tokenizer with that vocabulary must
#: reproduce them, with ``<s>`` and ``</s>``.
ROBERTA_BASE_VOCAB = 50265
ROBERTA_BASE_PROBES: dict[str, list[int]] = {
    "Hello world": [0, 31414, 232, 2],
    " Hello world": [0, 20920, 232, 2],
}
#: A sentence any byte-level tokenizer must encode and decode back unchanged.
ROUND_TRIP = "It's a très « naïve » film, 100% 🎬!"
#: Vocabulary entries that no merge makes and that are not bytes: GPT-2's ``<|endoftext|>``
#: and fairseq's ``madeupwordNNNN`` padding words, both in roberta-base's ``vocab.json``.
_ADDED_WORD = re.compile(r"^(<\|[a-z]+\|>|madeupword\d{4})$")

#: roberta-base's dimensions (its config.json), for a fresh full-size model.
ROBERTA_BASE = {
    "vocab_size": ROBERTA_BASE_VOCAB,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
}


def make_config(num_labels: int = 2, **dims: int | float) -> object:
    """A ``RobertaConfig`` for sequence classification (roberta-base's sizes unless given)."""
    from transformers import RobertaConfig

    return RobertaConfig(**{**ROBERTA_BASE, **dims, "num_labels": num_labels})


def build_classifier(config: object) -> nn.Module:
    """A freshly initialised ``RobertaForSequenceClassification`` of ``config``."""
    from transformers import RobertaForSequenceClassification

    return RobertaForSequenceClassification(config)


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, 2]`` of a batch of records ``x`` int64 ``[B, 2, L]`` (ids, mask)."""
    return model(input_ids=x[:, 0], attention_mask=x[:, 1]).logits


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def read_classifier(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A model folder (or its ``pytorch_model.bin``) as a classifier in eval mode, on ``device``.

    ``config.json`` must describe a RoBERTa model; ``num_labels`` is forced to 2 as MICO's
    ``load_model`` does.  Any unreadable or mismatched file raises ``ValueError`` (or
    ``FileNotFoundError``) naming it.  A ``roberta.embeddings.position_ids`` entry, which older
    transformers saved as a buffer, is dropped; every other key must fit exactly.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for needed in (config_path, weights):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed}: model file missing; is the bundle complete?")
    try:
        values = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config_path}: not readable JSON ({_reason(exc)})") from None
    if not isinstance(values, dict) or values.get("model_type") != "roberta":
        raise ValueError(f"{config_path}: not a RoBERTa config (model_type must be 'roberta')")
    from transformers import RobertaConfig

    try:
        config = RobertaConfig.from_dict({**values, "num_labels": 2})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{config_path}: not a usable RoBERTa config ({_reason(exc)})") from None
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as exc:
        raise ValueError(
            f"{weights}: not a readable state_dict ({_reason(exc)}); re-download the file"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{weights}: expected a state_dict of tensors, got {type(state).__name__}")
    state = {k: v for k, v in strip_opacus_prefix(state).items() if not k.endswith("position_ids")}
    model = build_classifier(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{weights}: does not fit {config_path} ({_reason(exc)})") from None
    return model.to(device).eval()


def write_classifier(folder: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Write ``config.json`` (of ``model``) and ``state`` as ``pytorch_model.bin`` into ``folder``.

    Opacus' ``_module.`` prefix is stripped, as MICO's ``from_pretrained`` could not load it.
    """
    write_text_atomic(folder / CONFIG_FILE, model.config.to_json_string())  # type: ignore[union-attr]
    with atomic_write(folder / WEIGHTS_FILE, "wb") as handle:
        torch.save(strip_opacus_prefix(state), handle)


# --- tokenizer --------------------------------------------------------------------------------


def load_tokenizer(folder: Path, max_length: int) -> object:
    """roberta-base's tokenizer from ``vocab.json``/``merges.txt`` in ``folder``, padding and
    truncating every sentence to ``max_length`` ids (offline: nothing is fetched)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    paths = [folder / name for name in TOKENIZER_FILES]
    ids = check_tokenizer_files(folder)
    try:
        bpe = models.BPE.from_file(str(paths[0]), str(paths[1]))
    except Exception as exc:  # tokenizers reports a malformed file as a plain Exception
        raise ValueError(f"{folder}: not a RoBERTa tokenizer ({_reason(exc)})") from None
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", ids["</s>"]), ("<s>", ids["<s>"]), trim_offsets=True
    )
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    _check_probes(tokenizer, folder)
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(length=max_length, pad_id=ids["<pad>"], pad_token="<pad>")
    return tokenizer


def check_tokenizer_files(folder: Path) -> dict[str, int]:
    """Validate ``vocab.json`` and ``merges.txt``; the vocabulary (token -> id).

    ``vocab.json``: an object of distinct ids ``0..V-1`` holding the special tokens and the 256
    byte symbols.  ``merges.txt``: an optional ``#version`` line, then one merge a line, two
    tokens of the vocabulary whose concatenation is in it too.  And every other token must be
    made by a merge: an empty, cut-short or foreign ``merges.txt`` leaves tokens that none
    makes (roberta-base's only such words are ``<|endoftext|>`` and fairseq's padding words).
    Each problem is a ``ValueError`` naming the file and saying to fetch it again.
    """
    from tokenizers import pre_tokenizers

    vocab_path, merges_path = (folder / name for name in TOKENIZER_FILES)
    for path in (vocab_path, merges_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: tokenizer file missing; rerun download_files.py")
    fix = "fetch them again (download_files.py; a demo's: rebuild the demo data)"
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder}: unreadable tokenizer file ({_reason(exc)}); {fix}") from None
    ok = isinstance(vocab, dict) and all(type(i) is int for i in vocab.values())
    if not ok or sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(f"{vocab_path}: expected token ids 0..n-1, each once; {fix}")
    absent = [t for t in (*SPECIAL_TOKENS, *pre_tokenizers.ByteLevel.alphabet()) if t not in vocab]
    if absent:
        raise ValueError(f"{vocab_path}: {len(absent)} special or byte tokens missing; {fix}")
    made = set()
    for number, line in enumerate(lines, start=1):
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(p in vocab for p in parts) or "".join(parts) not in vocab:
            raise ValueError(
                f"{merges_path}: line {number} is not a merge of this vocabulary; {fix}"
            )
        made.add("".join(parts))
    basic = {*SPECIAL_TOKENS, *pre_tokenizers.ByteLevel.alphabet()}
    dead = [t for t in vocab if t not in made and t not in basic and not _ADDED_WORD.match(t)]
    if dead:
        raise ValueError(
            f"{merges_path}: {len(made)} merges, and {len(dead)} tokens of vocab.json that no "
            f"merge makes (first: {dead[0]!r}): the file is cut short, empty or from another "
            f"tokenizer; {fix}"
        )
    return {token: vocab[token] for token in SPECIAL_TOKENS}


def _check_probes(tokenizer: object, folder: Path) -> None:
    """Known sentences through the assembled tokenizer: :data:`ROUND_TRIP` decodes back to
    itself, and roberta-base's vocabulary gives its published ids (:data:`ROBERTA_BASE_PROBES`)."""
    encoded = tokenizer.encode(ROUND_TRIP)  # type: ignore[attr-defined]
    decoded = tokenizer.decode(encoded.ids)  # type: ignore[attr-defined]
    problem = None if decoded == ROUND_TRIP else f"{ROUND_TRIP!r} comes back as {decoded!r}"
    if tokenizer.get_vocab_size(with_added_tokens=False) == ROBERTA_BASE_VOCAB:  # type: ignore[attr-defined]
        for sentence, expected in ROBERTA_BASE_PROBES.items():
            got = tokenizer.encode(sentence).ids  # type: ignore[attr-defined]
            if got != expected and problem is None:
                problem = f"{sentence!r} encodes to {got}, roberta-base's ids are {expected}"
    if problem is not None:
        raise ValueError(
            f"{folder}: the tokenizer does not reproduce known encodings ({problem}); fetch "
            "vocab.json and merges.txt again (download_files.py)"
        )


def encode(tokenizer: object, sentences: Sequence[str]) -> torch.Tensor:
    """int64 ``[N, 2, max_length]``: each sentence's ``input_ids`` and ``attention_mask``."""
    encodings = tokenizer.encode_batch(list(sentences))  # type: ignore[attr-defined]
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64)
    return torch.stack([ids, mask], dim=1)


def train_tokenizer(sentences: Sequence[str], folder: Path, vocab_size: int) -> None:
    """Train a byte-level BPE on ``sentences`` and save it roberta-style into ``folder``
    (``vocab.json`` and ``merges.txt``, special tokens first, in roberta-base's ids)."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        list(sentences), vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS)
    )
    folder.mkdir(parents=True, exist_ok=True)
    model = json.loads(bpe.to_str())["model"]
    write_text_atomic(folder / VOCAB_FILE, json.dumps(model["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    write_text_atomic(folder / MERGES_FILE, "#version: 0.2\n" + "".join(f"{m}\n" for m in merges))
