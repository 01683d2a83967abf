"""The SST-2 track: GLUE parquet reader, roberta-base tokenizer, RoBERTa model folders, the tiny
offline demo through all four scripts, and the download from a local fake hub."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import download_files
import mico.fetch.urls
import mico.subset
import run_lira_mia
import save_preds
import save_zip
from mico.models import load_model
from mico.roberta import encode, load_tokenizer, train_tokenizer
from mico.sources import RemoteFile
from mico.tasks import get_task, load_task
from mico.tracks import sst2
from tests.fake_hub import serve_base_files, serve_bundle

NAME = "sst2"
ROWS = sst2.GLUE_ROWS


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SST-2 demo and its predictions (read-only)."""
    root = tmp_path_factory.mktemp("tiny_sst2")
    args = ["--challenge", NAME, "--root", str(root), "-q"]
    assert download_files.main([*args, "--demo", "tiny"]) == 0
    assert save_preds.main(args) == 0
    return root


def model_folder(root: Path, scenario: str = "sst2_hi", phase: str = "dev") -> Path:
    return next((root / NAME / scenario / phase).iterdir())


def test_tiny_demo_runs_through_every_script(demo, tmp_path):
    args = ["--challenge", NAME, "--root", str(demo), "--preds-dir", str(demo / "preds")]
    out = tmp_path / "predictions.zip"
    assert run_lira_mia.main([*args, "-q", "--no-write"]) == 0
    # A private copy of the bundle receives prediction.csv files and is zipped.
    copy = tmp_path / "copy"
    shutil.copytree(demo, copy)
    args = ["--challenge", NAME, "--root", str(copy), "-q"]
    assert run_lira_mia.main(args) == 0
    assert save_zip.main([*args, "--output", str(out)]) == 0
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
    assert len(names) == 3 * 2  # 3 scenarios x (1 dev + 1 final) in the tiny preset
    assert all(name.startswith("sst2/sst2_") and name.endswith("prediction.csv") for name in names)


def test_model_folders_are_mico_format_and_load_like_mico(demo):
    folder = model_folder(demo)
    assert sorted(p.name for p in folder.iterdir() if p.suffix in (".json", ".bin")) == [
        "config.json",
        "pytorch_model.bin",
    ]
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert not any(key.startswith("_module.") for key in state)  # DP model, prefix stripped
    model = load_model(NAME, folder)
    assert type(model).__name__ == "RobertaForSequenceClassification" and not model.training
    # What MICO's load_model('sst2', path) does, offline on the same folder.
    from transformers import AutoModelForSequenceClassification

    reference = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
    data = get_task(NAME).loader  # the track's loader reads the demo data in the same format
    x = data(demo / "data").x[:8]
    with torch.no_grad():
        ours = sst2.forward(model, x)
        theirs = reference(input_ids=x[:, 0], attention_mask=x[:, 1]).logits
    torch.testing.assert_close(ours, theirs)


def test_stored_margins_are_the_models_margins(demo):
    from mico.inference import true_label_margin
    from mico.splits import challenge_indices, read_seed
    from mico.store import ScenarioScores

    task = load_task(demo, NAME)
    folder = model_folder(demo, "sst2_inf", "final")
    scores = ScenarioScores.load(demo / "preds" / NAME / "sst2_inf" / "scores.npz")
    points = challenge_indices(
        task.dataset_len, task.len_challenge, read_seed(folder / "seed_challenge")
    )
    data = task.load_dataset(demo / "data")
    index = torch.from_numpy(points)
    with torch.no_grad():
        margin = true_label_margin(
            sst2.forward(load_model(task, folder), data.x[index]), data.y[index]
        )
    final = scores.phases["final"]
    np.testing.assert_allclose(final.margin[0], margin.numpy(), rtol=1e-5, atol=1e-5)


def test_tokenizer_matches_transformers_roberta_tokenizer(demo):
    from transformers import RobertaTokenizer

    folder = demo / "data" / NAME / sst2.TOKENIZER_FOLDER
    sentences = pd.read_parquet(demo / "data" / NAME / "train.parquet")["sentence"].tolist()[:50]
    sentences += ["it 's a <mask> , Ünïcode   film ", "not " * 80]  # specials, bytes, too long
    ours = encode(load_tokenizer(folder, sst2.MAX_LENGTH), sentences)
    reference = RobertaTokenizer.from_pretrained(folder)(
        sentences, padding="max_length", max_length=sst2.MAX_LENGTH, truncation=True
    )
    assert ours.shape == (len(sentences), 2, sst2.MAX_LENGTH)
    assert ours[:, 0].tolist() == reference["input_ids"]
    assert ours[:, 1].tolist() == reference["attention_mask"]


def glue_table(rows: int, offset: int = 0) -> pd.DataFrame:
    """A table in GLUE SST-2's parquet schema (sentence string, label int64, idx int32)."""
    sentences = [f"review {offset + i} is {'good' if i % 3 else 'bad'} " for i in range(rows)]
    return pd.DataFrame(
        {
            "sentence": pd.array(sentences, dtype="string"),
            "label": (np.arange(rows) % 3 != 0).astype(np.int64),
            "idx": np.arange(rows, dtype=np.int32),
        }
    )


def write_glue(data: Path, train: pd.DataFrame, validation: pd.DataFrame) -> None:
    folder = data / NAME
    folder.mkdir(parents=True, exist_ok=True)
    train.to_parquet(folder / "train.parquet", index=False)
    validation.to_parquet(folder / "validation.parquet", index=False)
    sentences = [*train["sentence"].head(500), *validation["sentence"]]
    train_tokenizer(sentences, folder / sst2.TOKENIZER_FOLDER, 300)


def test_reader_keeps_glue_order_and_refuses_reordered_tables(tmp_path):
    data = tmp_path / "data"
    write_glue(data, glue_table(30), glue_table(5, offset=30))
    dataset = sst2.load_sst2(data)
    assert dataset.x.shape == (35, 2, sst2.MAX_LENGTH) and dataset.x.dtype == torch.int64
    tokenizer = load_tokenizer(data / NAME / sst2.TOKENIZER_FOLDER, sst2.MAX_LENGTH)
    assert torch.equal(dataset.x[31], encode(tokenizer, ["review 31 is good "])[0])
    assert dataset.y[:4].tolist() == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="GLUE SST-2 has 67349"):
        sst2.load_sst2(data, glue_rows=True)
    shuffled = glue_table(30).sample(frac=1.0, random_state=0)
    write_glue(data, shuffled, glue_table(5))
    with pytest.raises(ValueError, match="idx does not run"):
        sst2.load_sst2(data)
    unlabeled = glue_table(5).assign(label=-1)
    write_glue(data, glue_table(30), unlabeled)
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        sst2.load_sst2(data)


# --- download from a local fake hub -----------------------------------------------------------

TINY = {
    "dataset_len": ROWS["train.parquet"] + ROWS["validation.parquet"],
    "len_training": ROWS["train.parquet"],
    "len_challenge": 10,
    "models_per_phase": {"train": 1, "dev": 1, "final": 1},
}


SOLUTION = (",".join(["1"] * 10 + ["0"] * 10) + "\r\n").encode()


@pytest.fixture(scope="module")
def hub_files(demo) -> tuple[dict[str, bytes], dict[RemoteFile, bytes]]:
    """A small SST-2 bundle (paths relative to ``sst2/``), and GLUE-sized tables and the demo's
    tokenizer as the base files."""
    folder = model_folder(demo)
    weights = {name: (folder / name).read_bytes() for name in ("config.json", "pytorch_model.bin")}
    files = {"bundle.json": json.dumps(TINY).encode()}
    task = get_task(NAME).replace(
        **{k: v for k, v in TINY.items() if k != "models_per_phase"},
        models_per_phase=tuple(TINY["models_per_phase"].items()),
    )
    from mico.subset import bundle_files

    for path in bundle_files(task):
        name = path.rsplit("/", 1)[-1]
        files[path] = weights.get(name) or (SOLUTION if name == "solution.csv" else b"12345\n")
    base = {}
    for remote in sst2.BASE_FILES:
        if remote.path in sst2.TABLES:
            buffer = io.BytesIO()
            glue_table(ROWS[remote.path]).to_parquet(buffer, index=False)
            base[remote] = buffer.getvalue()
        else:
            base[remote] = (demo / "data" / NAME / remote.path).read_bytes()
    return files, base


@pytest.fixture
def server(fake_hub, hub_files):
    """The suite's fake hub, serving this SST-2 layout and its base repositories too."""
    files, base = hub_files
    serve_bundle(fake_hub, files, NAME)
    serve_base_files(fake_hub, base)
    return fake_hub


def fetch(server, root: Path, *args: str, base_url: str | None = "/mirror") -> int:
    argv = ["--challenge", NAME, "--root", str(root), "-q"]
    if base_url is not None:
        argv += ["--base-url", f"{server.url}{base_url}"]
    return download_files.main([*argv, *args])


def test_dry_run_lists_files_and_size(server, tmp_path, capsys):
    assert fetch(server, tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    # Per scenario: a train model (3 seeds, solution, 2 weight files), dev and final (seed, 2).
    assert "would fetch 36 of 36 bundle files" in out
    assert "4 base dataset files" in out and "nyu-mll" not in out  # --base-url mirror
    assert fetch(server, tmp_path, "--dry-run", "--skip-bundle", base_url=None) == 0
    out = capsys.readouterr().out
    assert "4 base dataset files from the hub" in out and "nyu-mll/glue/sst2/train" in out
    assert not any(tmp_path.iterdir())


def test_download_verifies_base_data_and_reads_offline(server, tmp_path):
    assert fetch(server, tmp_path) == 0
    data = get_task(NAME).loader(tmp_path / "data")
    assert len(data) == TINY["dataset_len"] and data.x.shape[1:] == (2, sst2.MAX_LENGTH)
    model = load_model(NAME, tmp_path / NAME / "sst2_lo" / "final" / "model_2")
    assert not model.training
    before = len(server.log)
    assert fetch(server, tmp_path) == 0  # a rerun transfers nothing
    assert server.log[before:] == []


def test_base_data_comes_from_the_hub_through_its_cache(server, tmp_path, hub_files):
    """Without --base-url, GLUE's tables and roberta-base's tokenizer files are fetched from
    their repositories (a dataset and a model) into the hub cache, then copied into place."""
    assert fetch(server, tmp_path, "--skip-bundle", base_url=None) == 0
    _, base = hub_files
    for remote, content in base.items():
        assert (tmp_path / "data" / NAME / remote.path).read_bytes() == content
    paths = {r.path for r in server.log if r.kind == "resolve"}
    assert any(p.startswith("/datasets/nyu-mll/glue/resolve/") for p in paths)
    assert any(p.startswith("/FacebookAI/roberta-base/resolve/") for p in paths)
    assert not any(r.path.startswith("/mirror/") for r in server.log)
    assert list((tmp_path / "hf_home" / "hub").glob("datasets--nyu-mll--glue"))


def test_wrong_base_data_is_refused_and_removed(server, tmp_path, capsys):
    path = "/mirror/validation-00000-of-00001.parquet"
    buffer = io.BytesIO()
    glue_table(871).to_parquet(buffer, index=False)
    server.files[path] = buffer.getvalue()
    assert fetch(server, tmp_path, "--skip-bundle") == 2
    assert "GLUE SST-2 has 872" in capsys.readouterr().err
    assert not (tmp_path / "data" / NAME / "validation.parquet").exists()


def test_subset_fetches_only_the_chosen_models(server, tmp_path):
    args = ("--skip-base", "--scenarios", "lo", "--phases", "dev,final", "--models", "1")
    assert fetch(server, tmp_path, *args) == 0
    fetched = sorted(str(p.relative_to(tmp_path / NAME)) for p in (tmp_path / NAME).rglob("*.bin"))
    assert fetched == [
        "sst2_lo/dev/model_1/pytorch_model.bin",
        "sst2_lo/final/model_2/pytorch_model.bin",
    ]


def test_free_space_check_names_the_need_and_the_subset_flags(
    server, tmp_path, monkeypatch, capsys
):
    usage = mico.subset.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(mico.subset.shutil, "disk_usage", lambda path: usage._replace(free=10**9))
    assert fetch(server, tmp_path, "--skip-base") == 2
    err = capsys.readouterr().err
    assert "9 models to fetch need about" in err and "--scenarios" in err
    assert not list((tmp_path / NAME).rglob("*.bin"))


def test_few_out_models_are_reported(demo, caplog):
    """MICO's SST-2 ratio leaves about one OUT model per point: save_preds says so."""
    from mico.predict import warn_few_out_models

    shadow_in = np.array([[True, True, False], [True, False, False]])
    with caplog.at_level(logging.WARNING):
        warn_few_out_models("sst2_inf", shadow_in)
    assert "1 of 3 challenge points have no OUT shadow model and 1 have one" in caplog.text


def test_caches_follow_the_tokenized_records(demo, tmp_path):
    """Issue 22 group A on the text track: two sentences of train.parquet trade places (the
    file keeps its time stamps); save_preds' caches, keyed on the tokenized records, are all
    recomputed."""
    from mico.predict import PredictOptions, save_scenario
    from mico.store import ScenarioScores

    root = Path(shutil.copytree(demo, tmp_path / "copy"))
    task = load_task(root, NAME)
    scenario, out = root / NAME / "sst2_inf", root / "preds" / NAME / "sst2_inf"
    before = ScenarioScores.load(out / "scores.npz")
    table = root / "data" / NAME / "train.parquet"
    frame, stamp = pd.read_parquet(table), table.stat()
    frame.loc[[0, 1], "sentence"] = frame.loc[[1, 0], "sentence"].to_numpy()
    frame.to_parquet(table, index=False)
    os.utime(table, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    dataset = task.load_dataset(root / "data")
    after, evaluated = save_scenario(scenario, out, task, dataset, PredictOptions())
    assert evaluated == len(before.shadow_ids) * len(before.points) + 2 * task.num_challenges
    assert after.provenance["data"] == dataset.digest != before.provenance["data"]


# --- issue 22, group G: the tokenizer files are validated --------------------------------------


def _cut(text: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[: len(lines) // 2])


@pytest.mark.parametrize(
    ("name", "damage", "expected"),
    [
        ("merges.txt", lambda text: "", "0 merges, and"),  # the empty merges.txt
        ("merges.txt", _cut, "tokens of vocab.json that no merge makes"),
        ("merges.txt", lambda text: text + "zz qq\n", "is not a merge of this vocabulary"),
        ("vocab.json", lambda text: text.replace('"<mask>"', '"<masc>"'), "tokens missing"),
        ("vocab.json", lambda text: text.replace('": 1,', '": 7,', 1), "ids 0..n-1, each once"),
        ("vocab.json", lambda text: text[:-2], "unreadable tokenizer file"),
    ],
)
def test_damaged_tokenizer_files_are_refused(demo, tmp_path, capsys, name, damage, expected):
    data = Path(shutil.copytree(demo / "data", tmp_path / "data"))
    path = data / NAME / sst2.TOKENIZER_FOLDER / name
    path.write_text(damage(path.read_text(encoding="utf-8")), encoding="utf-8")
    argv = ["--challenge", NAME, "--root", str(demo), "--data-dir", str(data), "-q"]
    assert save_preds.main([*argv, "--preds-dir", str(tmp_path / "preds")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "panicked" not in err and len(err.splitlines()) == 1
    assert expected in err and str(path.parent) in err
    assert not (tmp_path / "preds").exists()


def roberta_shaped(folder: Path) -> dict[str, int]:
    """A byte-level BPE with roberta-base's vocabulary size and special ids in which
    ``Hello``, ``ĠHello`` and ``Ġworld`` have roberta-base's ids (merges of two byte symbols
    fill the rest); the vocabulary is returned."""
    from tokenizers import pre_tokenizers

    from mico.roberta import ROBERTA_BASE_VOCAB, SPECIAL_TOKENS

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    chain = [("H", "e"), ("l", "l"), ("He", "ll"), ("Hell", "o"), ("Ġ", "Hello")]
    chain += [("o", "r"), ("w", "or"), ("l", "d"), ("wor", "ld"), ("Ġ", "world")]
    made = {a + b for a, b in chain}
    fixed = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": ROBERTA_BASE_VOCAB - 1}
    fixed.update({"Hello": 31414, "ĠHello": 20920, "Ġworld": 232})
    tokens = [*alphabet, *(t for t in made if t not in fixed)]
    merges = list(chain)
    for a in alphabet:
        for b in alphabet:
            if len(tokens) + len(fixed) == ROBERTA_BASE_VOCAB:
                break
            if a + b not in made:
                merges.append((a, b))
                tokens.append(a + b)
    free = iter(sorted(set(range(ROBERTA_BASE_VOCAB)) - set(fixed.values())))
    vocab = {**fixed, **{token: next(free) for token in tokens}}
    assert set(SPECIAL_TOKENS) <= set(vocab) and len(vocab) == ROBERTA_BASE_VOCAB
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = "".join(f"{a} {b}\n" for a, b in merges)
    (folder / "merges.txt").write_text("#version: 0.2\n" + lines, encoding="utf-8")
    return vocab


def test_roberta_base_vocabulary_must_give_its_published_ids(tmp_path):
    """With roberta-base's vocabulary, "Hello world" and " Hello world" must encode to the ids
    transformers' RobertaTokenizer documents; two ids traded between tokens are refused."""
    folder = tmp_path / "roberta-base"
    vocab = roberta_shaped(folder)
    tokenizer = load_tokenizer(folder, 8)
    assert encode(tokenizer, ["Hello world"])[0, 0, :4].tolist() == [0, 31414, 232, 2]
    assert encode(tokenizer, [" Hello world"])[0, 0, :4].tolist() == [0, 20920, 232, 2]
    vocab["Hello"], vocab["ab"] = vocab["ab"], vocab["Hello"]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match=r"'Hello world' encodes to \[0, \d+, 232, 2\], rob"):
        load_tokenizer(folder, 8)


def test_a_missing_config_json_is_listed_with_advice(demo, tmp_path, capsys):
    """Issue 22, group N: a missing config.json was raw errno text; the layout check, which
    every script runs first, lists it and says what to do."""
    root = Path(shutil.copytree(demo, tmp_path / "copy"))
    config = model_folder(root, "sst2_lo", "final") / "config.json"
    config.unlink()
    assert save_preds.main(["--challenge", NAME, "--root", str(root), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"  {config}: missing" in err and "Errno" not in err and "Traceback" not in err
    assert "restore or re-download what is missing (download_files.py)" in err.splitlines()[-1]
