"""SST-2: MICO's text track (GLUE SST-2 sentences, 2 classes, fine-tuned RoBERTa-base).

The registry entry :data:`TASK` and what only this track needs: the GLUE parquet reader, the
demo's synthetic sentences, their writer in the same parquet format and a tokenizer trained on
them.  Models, tokenizer and token batches are :mod:`mico.tracks.roberta`'s.

MICO's ``load_sst2()`` is GLUE ``sst2`` train (67349 rows) followed by validation (872), N =
68221; dataset index ``i`` is that row.  The reader checks that each table's ``idx`` column runs
``0..n-1``, as the split indices rely on row order.  Data layout::

    <data-dir>/sst2/train.parquet         GLUE columns sentence (string), label (0/1), idx
    <data-dir>/sst2/validation.parquet
    <data-dir>/sst2/roberta-base/         vocab.json, merges.txt (roberta-base's tokenizer)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mico.bundle.fileio import atomic_write
from mico.errors import InputError
from mico.tracks.base import Demo, Preset, Task, mico_privacy, synth_stream
from mico.tracks.recipes import Recipe
from mico.tracks.roberta import (
    MODEL_FILES,
    TOKENIZER_FILES,
    build_classifier,
    encode,
    forward,
    load_tokenizer,
    make_config,
    read_classifier,
    train_tokenizer,
    write_classifier,
)
from mico.tracks.sources import BaseDataset, RemoteFile, Source

if TYPE_CHECKING:  # pandas and torch load where a table is read or written, not with the registry
    import pandas as pd
    from torch import nn

    from mico.tracks.data import TensorPairDataset

NAME = "sst2"
#: The tokenizer's ``max_length`` in MICO's starting kit and training (``padding="max_length"``).
MAX_LENGTH = 67
TABLES: tuple[str, ...] = ("train.parquet", "validation.parquet")
#: GLUE's row counts, checked when the real tables are read (a demo writes other sizes).
GLUE_ROWS = {"train.parquet": 67349, "validation.parquet": 872}
TOKENIZER_FOLDER = "roberta-base"

#: The current parquet conversion of GLUE on the Hugging Face hub, and roberta-base's tokenizer.
GLUE_REPO = "nyu-mll/glue"
ROBERTA_REPO = "FacebookAI/roberta-base"
BASE_FILES = (
    RemoteFile(TABLES[0], GLUE_REPO, "sst2/train-00000-of-00001.parquet", "dataset"),
    RemoteFile(TABLES[1], GLUE_REPO, "sst2/validation-00000-of-00001.parquet", "dataset"),
    *(RemoteFile(f"{TOKENIZER_FOLDER}/{name}", ROBERTA_REPO, name) for name in TOKENIZER_FILES),
)


def read_table(path: Path, rows: int | None = None) -> pd.DataFrame:
    """One GLUE SST-2 table, checked: columns ``sentence``/``label``/``idx``, labels 0/1, ``idx``
    equal to the row number (and ``rows`` rows, when given)."""
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `python download_files.py --challenge {NAME}` (or add --demo "
            f"for the offline demo), or point --data-dir at the folder holding {NAME}/"
        )
    try:
        table = pd.read_parquet(path, columns=["sentence", "label", "idx"], engine="pyarrow")
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a GLUE SST-2 parquet table ({exc})") from None
    if rows is not None and len(table) != rows:
        raise InputError(f"{path}: {len(table)} rows, GLUE SST-2 has {rows}; re-download it")
    if not np.array_equal(table["idx"].to_numpy(), np.arange(len(table))):
        raise InputError(f"{path}: idx does not run 0..n-1 in row order; the splits need it to")
    if not table["label"].isin([0, 1]).all():
        raise InputError(f"{path}: labels must be 0 or 1 (the test split's -1 is not usable)")
    return table


def load_sst2(dataset_dir: str | Path, *, glue_rows: bool = False) -> TensorPairDataset:
    """``<dataset_dir>/sst2``: train then validation, tokenised to int64 ``[N, 2, 67]`` records
    (input_ids, attention_mask) with labels ``[N]``; ``glue_rows`` also checks GLUE's sizes."""
    import pandas as pd
    import torch

    from mico.tracks.data import TensorPairDataset

    folder = Path(dataset_dir) / NAME
    tables = [read_table(folder / name, GLUE_ROWS[name] if glue_rows else None) for name in TABLES]
    table = pd.concat(tables, ignore_index=True)
    tokenizer = load_tokenizer(folder / TOKENIZER_FOLDER, MAX_LENGTH)
    x = encode(tokenizer, table["sentence"].astype(str).tolist())
    return TensorPairDataset(x, torch.tensor(table["label"].to_numpy(dtype=np.int64)))


def check_download(folder: Path) -> None:
    """What ``download_files.py`` verifies after fetching: GLUE's row counts and index order,
    and a tokenizer that loads."""
    load_sst2(folder.parent, glue_rows=True)


def roberta_base() -> nn.Module:
    """A fresh RoBERTa-base classifier (MICO fine-tunes the pretrained one; see docs/sst2.md)."""
    return build_classifier(make_config())


# --- offline demo -----------------------------------------------------------------------------

#: Sentiment words (positive, then negative), subjects, fillers and name syllables of the
#: synthetic reviews, space-separated.
_POSITIVE = "good great superb moving funny charming brilliant warm clever fresh"
_NEGATIVE = "bad dull awful boring flat tedious stale clumsy weak messy"
_SUBJECTS = "movie film plot cast script story ending score director performance"
_FILLERS = "the a this its really quite very and but with of at so too"
_SYLLABLES = "ka lo mi ru te van sel dor pim gus fre bo"
#: Share of sentences whose label is flipped: the noise a model can only memorise.
_LABEL_NOISE = 0.15
#: Target vocabulary of the demo tokenizer (256 bytes, 5 specials, the rest merges).
DEMO_VOCAB = 600


def synthesize_sst2(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """SST-2-like lower-case review snippets: ``sentences`` (object array of str), ``labels``.

    Each snippet mixes fillers, a subject, one to three sentiment words (each negated by "not"
    with probability 0.2) and a made-up name; the label is the sign of the summed polarity, and
    15% of labels are flipped.  The rule is learnable, while flipped rows and their names can
    only be memorised, which gives the membership signal.
    """
    rng = synth_stream(seed, 2, 1)
    positive_words, negative_words = _POSITIVE.split(), _NEGATIVE.split()
    subjects, fillers, syllables = _SUBJECTS.split(), _FILLERS.split(), _SYLLABLES.split()
    sentences, labels = [], np.empty(n, dtype=np.int64)
    for row in range(n):
        words = [str(w) for w in rng.choice(fillers, rng.integers(2, 7))]
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(subjects)))
        score = 0
        for _ in range(int(rng.integers(1, 4))):
            positive = bool(rng.random() < 0.5)
            word = str(rng.choice(positive_words if positive else negative_words))
            negated = bool(rng.random() < 0.2)
            score += (1 if positive else -1) * (-1 if negated else 1)
            phrase = f"not {word}" if negated else word
            words.insert(int(rng.integers(0, len(words) + 1)), phrase)
        name = "".join(str(s) for s in rng.choice(syllables, rng.integers(2, 4)))
        words.insert(int(rng.integers(0, len(words) + 1)), name)
        label = int(score > 0) if score != 0 else int(rng.integers(0, 2))
        if rng.random() < _LABEL_NOISE:
            label = 1 - label
        sentences.append(" ".join(words) + " ")  # GLUE's sentences end in a space
        labels[row] = label
    return np.array(sentences, dtype=object), labels


def write_sst2(data_dir: Path, sentences: np.ndarray, labels: np.ndarray) -> None:
    """GLUE-format train and validation tables (validation: MICO's share, 872 / 68221), and a
    byte-level BPE tokenizer trained on the sentences, in roberta-base's file format."""
    import pandas as pd

    folder = data_dir / NAME
    n_val = max(1, round(len(sentences) * GLUE_ROWS[TABLES[1]] / 68221))
    parts = (slice(0, len(sentences) - n_val), slice(len(sentences) - n_val, len(sentences)))
    for name, rows in zip(TABLES, parts, strict=True):
        table = pd.DataFrame(
            {
                "sentence": pd.array(sentences[rows], dtype="string"),
                "label": labels[rows].astype(np.int64),
                "idx": np.arange(len(labels[rows]), dtype=np.int32),
            }
        )
        with atomic_write(folder / name, "wb") as handle:
            table.to_parquet(handle, engine="pyarrow", index=False)
    train_tokenizer(sentences.tolist(), folder / TOKENIZER_FOLDER, DEMO_VOCAB)


def dataset_files(data_dir: Path) -> list[Path]:
    """The tables and tokenizer files :func:`load_sst2` reads."""
    folder = data_dir / NAME
    tokenizer = [folder / TOKENIZER_FOLDER / name for name in TOKENIZER_FILES]
    return [*(folder / name for name in TABLES), *tokenizer]


def tiny_roberta() -> nn.Module:
    """The demo's RoBERTa: roberta-base's structure with hidden size 32 and 2 layers, and the
    demo tokenizer's vocabulary (positions: ``max_length`` plus roberta's offset of 2)."""
    config = make_config(
        vocab_size=DEMO_VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_LENGTH + 2,
    )
    return build_classifier(config)


#: Demo changes to MICO's recipe: a randomly initialised tiny model needs a higher rate than
#: fine-tuning (5e-5 / 5e-4), and small logical batches (MICO's DP batch of 1024 would be the
#: whole demo training set, one step per epoch).
_DEMO_RECIPE = (("lr", 2e-3), ("dp_lr", 2e-3), ("batch_size", 32), ("dp_batch_size", 64))

#: Demo presets.  Unlike MICO's 98.7%, a model trains on half the dataset, so that each point
#: has OUT models for offline LiRA (MICO's ratio leaves about one OUT model per point).
#: Training sentences a model of the tiny preset, and so its DP batch (one step an epoch).
_TINY_TRAINING = 200

PRESETS: dict[str, Preset] = {
    "default": Preset(
        dataset_len=1000,
        len_training=500,
        train_models=8,
        eval_models=2,
        epochs=4,
        recipe_changes=_DEMO_RECIPE,
        architecture=tiny_roberta,
    ),
    # The suite's.  Its DP models draw every record at each step (one step an epoch, Poisson
    # rate 1): Opacus' PRV noise calibration takes ~0.3 s at rate 1 against 3-4 s at 64 of 200
    # (rate 1/4) on a 2-core CPU.
    "tiny": Preset(
        dataset_len=360,
        len_training=_TINY_TRAINING,
        train_models=2,
        eval_models=1,
        epochs=1,
        recipe_changes=tuple({**dict(_DEMO_RECIPE), "dp_batch_size": _TINY_TRAINING}.items()),
        architecture=tiny_roberta,
    ),
}

TASK = Task(
    name=NAME,
    dataset_len=68_221,
    len_training=67_349,
    len_challenge=100,
    num_classes=2,
    architecture=roberta_base,
    loader=load_sst2,
    # train_sst2_*.sh: inf lr 5e-5, batch 96; hi/lo batch 16 x 64 accumulation = 1024, lr 5e-4,
    # clipping 0.1; 3 epochs, constant rate.  HF's AdamW with weight decay 0 is Adam.
    recipe=Recipe(
        "adam",
        lr=5e-5,
        batch_size=96,
        epochs=3,
        lr_step=1,
        lr_gamma=1.0,
        dp_lr=5e-4,
        dp_batch_size=1024,
    ),
    privacy=mico_privacy(0.1),
    # Opacus has no ghost norm for LayerNorm; hooks cover Embedding, Linear and LayerNorm.
    grad_sample_mode="hooks",
    physical_batch=16,
    source=Source(
        repo_id="szanella/MICO-SST2",
        archive_name="sst2.zip",
        archive_md5=None,  # none published
        repo_prefix=f"{NAME}/",
        model_bytes=499_000_000,
        base=BaseDataset(
            url="",
            md5=None,
            folder=NAME,
            entry="",
            is_dir=True,
            required=tuple(f.path for f in BASE_FILES),
            files=BASE_FILES,
            check=check_download,
        ),
    ),
    demo=Demo(
        presets=PRESETS,
        synthesize=synthesize_sst2,
        write=write_sst2,
        files=dataset_files,
    ),
    model_files=MODEL_FILES,
    forward=forward,
    read_model=read_classifier,
    write_model=write_classifier,
)
