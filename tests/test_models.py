"""Model structure and safe loading of untrusted ``model.pt`` files."""

from __future__ import annotations

import os

import pytest
import torch

from mico.tracks.models import CNN, MLP, load_model


def test_state_dict_keys_match_mico():
    assert list(CNN().state_dict()) == [
        "cnn.0.weight",
        "cnn.0.bias",
        "cnn.3.weight",
        "cnn.3.bias",
        "cnn.5.weight",
        "cnn.5.bias",
        "cnn.9.weight",
        "cnn.9.bias",
    ]
    assert list(MLP().state_dict()) == ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]


def test_output_shapes():
    assert CNN()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert MLP()(torch.zeros(2, 600)).shape == (2, 100)


def test_load_plain_and_opacus_prefixed(tmp_path):
    model = MLP()
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    prefixed = {f"_module.{k}": v for k, v in model.state_dict().items()}
    torch.save(prefixed, tmp_path / "dp.pt")
    x = torch.randn(4, 600)
    for name in ("plain.pt", "dp.pt"):
        loaded = load_model("purchase100", tmp_path / name)
        assert not loaded.training
        assert torch.equal(loaded(x), model.eval()(x))


def test_missing_truncated_and_mismatched_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_model("purchase100", tmp_path / "absent.pt")
    torch.save(MLP().state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pt"):
        load_model("purchase100", tmp_path / "cut.pt")
    with pytest.raises(ValueError, match=r"full.pt: does not fit the CNN"):
        load_model("cifar10", tmp_path / "full.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt"):
        load_model("purchase100", tmp_path / "list.pt")


class _Payload:
    """Pickling this runs ``os.system`` on load: what weights_only must refuse."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_is_refused(tmp_path):
    torch.save({"mlp.0.weight": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt: not a readable state_dict"):
        load_model("purchase100", tmp_path / "evil.pt")
