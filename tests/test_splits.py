"""Split reconstruction against the C++ reference fixtures and a pure-Python MT19937."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from mico.bundle.splits import mt19937_words, randperm, read_seed, split_indices
from mico.compat import ChallengeDataset, subset_dataset_indices
from tests.reference import mt19937_reference


def _sha(indices) -> str:
    return hashlib.sha256(",".join(str(int(i)) for i in indices).encode()).hexdigest()


def _splits(case: dict):
    return split_indices(
        case["dataset_len"],
        case["len_training"],
        case["len_challenge"],
        case["seed_challenge"],
        case["seed_training"],
        case["seed_membership"],
    )


def test_fixtures_cover_both_tracks_and_large_seeds(split_cases):
    lengths = {case["dataset_len"] for case in split_cases}
    assert {60000, 197324} <= lengths
    assert any(case["seed_challenge"] > 2**32 for case in split_cases)


def test_split_indices_reproduce_reference_exactly(split_cases):
    for case in split_cases:
        s = _splits(case)
        assert s.challenge.tolist() == case["challenge"]
        assert s.solution.tolist() == case["solution"]
        assert s.member.tolist() == case["member"]
        head = len(case["training_head"])
        assert s.training[:head].tolist() == case["training_head"]
        assert s.evaluation[: len(case["evaluation_head"])].tolist() == case["evaluation_head"]
        assert _sha(s.training) == case["training_sha256"]
        assert _sha(s.evaluation) == case["evaluation_sha256"]


def test_split_structure_is_a_partition(split_cases):
    case = split_cases[0]
    s = _splits(case)
    n, m, big_n = case["len_training"], case["len_challenge"], case["dataset_len"]
    assert len(s.training) == n - m and len(s.evaluation) == big_n - n - m
    everything = np.concatenate([s.challenge, s.training, s.evaluation])
    assert np.array_equal(np.sort(everything), np.arange(big_n))
    mask = s.training_mask()
    assert mask.sum() == n
    assert np.array_equal(mask[s.challenge], s.solution.astype(bool))
    assert set(s.member.tolist()) | set(s.nonmember.tolist()) == set(s.challenge.tolist())


@pytest.mark.parametrize("seed", [0, 5489, 2**32 - 1, 2**32 + 7, 4387916387620438239])
def test_mt19937_words_match_textbook_generator(seed):
    assert mt19937_words(seed, 1500).tolist() == mt19937_reference(seed, 1500)


def test_std_mt19937_default_seed_known_value():
    # The C++ standard requires the 10000th output of a default-seeded (5489) mt19937.
    assert int(mt19937_words(5489, 10000)[-1]) == 4123659995


def test_randperm_matches_naive_fisher_yates():
    words = mt19937_reference(12345, 99)
    perm = list(range(100))
    for i in range(99):
        j = i + words[i] % (100 - i)
        perm[i], perm[j] = perm[j], perm[i]
    assert randperm(100, 12345).tolist() == perm
    assert randperm(1, 3).tolist() == [0]


def test_challenge_dataset_nests_subsets_like_mico(split_cases):
    case = next(c for c in split_cases if c["dataset_len"] <= 2000)
    n = case["dataset_len"]
    dataset = TensorDataset(torch.arange(n).float().unsqueeze(1), torch.arange(n))
    cd = ChallengeDataset(
        dataset,
        case["len_training"],
        case["len_challenge"],
        case["seed_challenge"],
        case["seed_training"],
        case["seed_membership"],
    )
    assert cd.challenge.dataset is dataset and cd.rest.dataset is dataset
    assert cd.training.dataset is cd.rest and cd.member.dataset is cd.challenge
    assert subset_dataset_indices(cd.get_challenges()).tolist() == case["challenge"]
    assert subset_dataset_indices(cd.member).tolist() == case["member"]
    assert cd.get_solutions() == case["solution"]
    train = cd.get_train_dataset()
    assert len(train) == case["len_training"]
    labels = [int(train[k][1]) for k in range(len(train))]
    s = _splits(case)
    assert labels == s.member.tolist() + s.training.tolist()
    assert len(cd.get_eval_dataset()) == n - case["len_training"] - case["len_challenge"]


def test_challenge_dataset_from_path_without_private_seeds(tmp_path, split_cases):
    case = next(c for c in split_cases if c["dataset_len"] <= 2000)
    (tmp_path / "seed_challenge").write_text(f"{case['seed_challenge']}\n")
    dataset = TensorDataset(torch.zeros(case["dataset_len"], 1))
    cd = ChallengeDataset.from_path(tmp_path, dataset, case["len_training"], case["len_challenge"])
    assert cd.challenge.indices == case["challenge"]
    assert cd.member is None and cd.training is None
    with pytest.raises(ValueError, match="seed_membership"):
        cd.get_solutions()
    (tmp_path / "seed_training").write_text(f"{case['seed_training']}\n")
    (tmp_path / "seed_membership").write_text(f"{case['seed_membership']}\n")
    cd = ChallengeDataset.from_path(tmp_path, dataset, case["len_training"], case["len_challenge"])
    assert cd.get_solutions() == case["solution"]


@pytest.mark.parametrize("text", ["", "abc", "-5", "1.5", str(2**63)])
def test_read_seed_rejects_bad_files(tmp_path, text):
    path = tmp_path / "seed_challenge"
    path.write_text(text + "\n")
    with pytest.raises(ValueError, match="seed_challenge"):
        read_seed(path)


def test_read_seed_missing_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="seed_training"):
        read_seed(tmp_path / "seed_training")


def test_inconsistent_sizes_are_refused():
    with pytest.raises(ValueError, match="inconsistent sizes"):
        split_indices(100, 90, 50, 1)
