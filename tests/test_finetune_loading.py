"""Loading each checkpoint kind into a classifier: the encoder weights arrive unchanged."""
from __future__ import annotations

import pytest
import torch

from _finetune_support import random_mlm, save_composer_checkpoint, save_flexbert_folder, write_config_yaml
from flexbert.finetune.model_loading import (CheckpointError, build_classifier, checkpoint_kind, find_tokenizer,
                                             load_pretrained)


def _assert_encoder_equal(clf: torch.nn.Module, mlm: torch.nn.Module) -> None:
    src = mlm.state_dict()
    encoder = [k for k in clf.state_dict() if k.startswith("model.")]
    assert encoder, "the classifier has no encoder tensors"
    for k in encoder:
        assert torch.equal(clf.state_dict()[k], src[k]), k


def _save(kind: str, mlm, tmp_path):
    if kind == "flexbert":
        return save_flexbert_folder(mlm, tmp_path / "flex")
    if kind == "composer":
        return save_composer_checkpoint(mlm, tmp_path / "run")
    from flexbert.export import save_hf

    save_hf(mlm, tmp_path / "hf")
    return tmp_path / "hf"


@pytest.mark.parametrize("kind", ["flexbert", "composer", "hf"])
def test_each_checkpoint_kind_gives_the_same_encoder(tmp_path, kind):
    mlm = random_mlm(seed=1)
    path = _save(kind, mlm, tmp_path)
    assert checkpoint_kind(path) == kind
    pre = load_pretrained(path)
    assert pre.kind == kind
    torch.manual_seed(0)
    clf, report = build_classifier(pre, num_labels=3, regression=False)
    _assert_encoder_equal(clf, mlm)
    assert clf.classifier.out_features == 3
    # The MLM head's dense + norm carry over (HF's from_pretrained does the same); the decoder does not.
    assert torch.equal(clf.state_dict()["head.dense.weight"], mlm.state_dict()["head.dense.weight"])
    assert report.newly_initialised == ["classifier.bias", "classifier.weight"]
    assert "decoder.bias" in report.unused
    assert len(report.loaded) == len([k for k in clf.state_dict() if k.startswith(("model.", "head."))])


def test_fresh_head_when_asked_and_regression_has_one_output(tmp_path):
    pre = load_pretrained(save_flexbert_folder(random_mlm(), tmp_path / "flex"))
    clf, report = build_classifier(pre, num_labels=1, regression=True, pooling="mean", init_head_from_mlm=False)
    assert clf.config.problem_type == "regression" and clf.config.classifier_pooling == "mean"
    assert clf.classifier.out_features == 1
    assert "head.dense.weight" in report.newly_initialised and "head.dense.weight" in report.unused
    out = clf(torch.tensor([[1, 7, 8, 2]]), labels=torch.tensor([0.5]))
    assert out.logits.shape == (1, 1) and out.loss.ndim == 0


def test_weights_not_fitting_the_config_are_named(tmp_path):
    mlm = random_mlm()
    folder = save_flexbert_folder(mlm, tmp_path / "flex")
    write_config_yaml(folder, random_mlm(hidden_size=64, intermediate_size=64))  # config no longer matches
    with pytest.raises(CheckpointError, match="do not fit the model.*wrong shapes"):
        load_pretrained(folder)


def test_unrecognised_paths_say_what_was_expected(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        checkpoint_kind(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="expected model.safetensors with config.yaml"):
        checkpoint_kind(tmp_path)
    lone = tmp_path / "x.pt"
    torch.save({}, lone)
    with pytest.raises(CheckpointError, match="needs the run's config.yaml beside it"):
        checkpoint_kind(lone)


def test_tokenizer_is_found_from_the_run_config(tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    pre = load_pretrained(save_composer_checkpoint(random_mlm(), tmp_path / "run", tokenizer=str(tok)))
    assert find_tokenizer(pre, None) == str(tok)
    assert find_tokenizer(pre, "explicit") == "explicit"
    missing = load_pretrained(save_composer_checkpoint(random_mlm(), tmp_path / "run2", tokenizer="gone"))
    with pytest.raises(CheckpointError, match="names tokenizer 'gone'.*pass --tokenizer"):
        find_tokenizer(missing, None)
