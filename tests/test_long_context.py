"""Long-context probes (flexbert/long_context): construction checked exactly, scoring against models whose
answers we know, the CLI on every model source, the training callback, the sweep hook, and the tiny chain.

Held-out data here is random content ids (no span repeats by chance), so a probe's "only other
occurrence" is a property of the construction, which the tests check token by token.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from _train_support import REPO, make_corpus, tiny_run, write_mds, write_yaml
from flexbert.long_context.compare import compare, probe_score
from flexbert.long_context.corpus import HeldOutError, heldout_from_arrays, load_heldout, read_mds_folder
from flexbert.long_context.probes import (IGNORE_INDEX, ProbeError, SpecialIds, build_mlm_distance, build_passkey,
                                          build_position_docs, occurrences)
from flexbert.long_context.runner import run_probes
from flexbert.long_context.scoring import pack_groups, score_documents
from flexbert.long_context.settings import ProbeSettings
from flexbert.model.masked_lm import MaskedLMOutput

SPECIAL = SpecialIds(cls=1, sep=2, mask=3)  # the tiny preset's ids (pad 0)
VOCAB = 128


def random_docs(n: int, length: int, seed: int = 0, low: int = 5, high: int = VOCAB) -> list[np.ndarray]:
    """[CLS] random content [SEP] documents (what an MDS split holds)."""
    rng = np.random.default_rng(seed)
    return [np.concatenate([[1], rng.integers(low, high, size=length), [2]]) for _ in range(n)]


@pytest.fixture(scope="module")
def heldout():
    return heldout_from_arrays(random_docs(6, 700), special_ids={0, 1, 2, 3}, source="random", vocab_size=VOCAB)


def small_settings(**kw) -> ProbeSettings:
    base = dict(max_length=256, distances=(16, 64, 200), span_length=4, mlm_samples=3, mlm_margin=8,
                passkey_lengths=(64, 256), passkey_depths=(0.0, 0.5, 1.0), passkey_samples=2, key_length=3,
                marker_length=2, position_docs=2, position_buckets=(0, 32, 128, 256))
    return ProbeSettings(**{**base, **kw}).resolve(256)


def tiny_model(vocab: int = VOCAB, seed: int = 0, **kw):
    from flexbert.config.model import load_model_config
    from flexbert.model import FlexBertForMaskedLM

    torch.manual_seed(seed)
    cfg = load_model_config({"preset": "tiny", "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64,
                             "num_attention_heads": 2, "max_position_embeddings": 256, "attn_backend": "eager", **kw})
    return FlexBertForMaskedLM(cfg).eval()


# --- settings -------------------------------------------------------------------------------------
def test_settings_defaults_follow_the_context_and_bad_lengths_are_refused():
    s = ProbeSettings().resolve(1024)
    assert s.max_length == 1024
    assert s.distances == (64, 128, 256, 512, 1014)  # the longest gap: 1024 - span 8 - [CLS] - [SEP]
    assert s.passkey_lengths == (256, 512, 1024)
    assert s.position_length == 1024 and s.position_buckets == (0, 64, 128, 256, 512, 1024)
    assert ProbeSettings(max_length=8192).resolve(1024).distances[-1] == 8182  # probing beyond the trained context
    with pytest.raises(ValueError, match=r"distances \[1020\] do not fit in max_length 1024 .*at most 1014"):
        ProbeSettings(distances="64,1020").resolve(1024)
    with pytest.raises(ValueError, match="distances must be >= span_length"):
        ProbeSettings(distances=[4], span_length=8)
    with pytest.raises(ValueError, match="probes .*choose from mlm_distance, passkey, loss_by_position"):
        ProbeSettings(probes="passkey,needle")
    with pytest.raises(ValueError, match="passkey_lengths"):
        ProbeSettings(passkey_lengths=[2048]).resolve(1024)
    assert ProbeSettings(batch_tokens=7).digest("x") == ProbeSettings().digest("x")  # grouping only
    assert ProbeSettings(seed=1).digest("x") != ProbeSettings().digest("x")


# --- probe construction ---------------------------------------------------------------------------
def _content(doc) -> np.ndarray:
    """The document's content with the targets restored (labels put back): what was built before masking."""
    ids = doc.input_ids.copy()
    at = doc.labels != IGNORE_INDEX
    ids[at] = doc.labels[at]
    return ids[1:-1]


def test_mlm_distance_copy_sits_at_the_distance_and_nowhere_else(heldout):
    s = small_settings()
    docs = build_mlm_distance(heldout, s, SPECIAL)
    assert len(docs) == 2 * len(s.distances) * s.mlm_samples
    for copy, base in zip(docs[::2], docs[1::2]):
        assert copy.cell == ("copy", copy.meta["distance"]) and base.cell == ("baseline", copy.meta["distance"])
        d, c, t, k = copy.meta["distance"], copy.meta["copy_start"], copy.meta["target_start"], s.span_length
        span = np.asarray(copy.meta["span"])
        assert t - c == d and len(copy) == len(base) <= s.max_length
        for doc in (copy, base):
            assert doc.input_ids[0] == SPECIAL.cls and doc.input_ids[-1] == SPECIAL.sep
            target = np.arange(t + 1, t + 1 + k)  # document positions of the masked span
            assert np.flatnonzero(doc.labels != IGNORE_INDEX).tolist() == target.tolist()
            assert (doc.input_ids[target] == SPECIAL.mask).all() and (doc.labels[target] == span).all()
        # with the copy: the span occurs exactly twice, at the copy and at the (masked) target...
        assert occurrences(_content(copy), span) == [c, t]
        assert occurrences(copy.input_ids[1:-1], span) == [c]  # ... so the only visible occurrence is the copy
        # the baseline lacks the copy: the span occurs only at the target, and is invisible once masked
        assert occurrences(_content(base), span) == [t]
        assert occurrences(base.input_ids[1:-1], span) == []
        # the two documents differ only where the copy was written
        differ = np.flatnonzero(copy.input_ids != base.input_ids) - 1
        assert set(differ.tolist()) <= set(range(c, c + k))
    tight = {doc.meta["distance"]: len(doc) for doc in docs}
    assert tight == {16: 16 + 4 + 16 + 2, 64: 64 + 4 + 16 + 2, 200: 200 + 4 + 16 + 2}  # distance + span + 2 margins + 2


def test_mlm_distance_skips_repeated_spans_and_refuses_data_too_repetitive():
    rng = np.random.default_rng(1)
    motif = np.array([7, 8, 9, 10])
    docs = []
    for _ in range(4):  # random text with the motif every 20 tokens: spans overlapping it repeat
        body = rng.integers(11, VOCAB, size=400)
        for at in range(0, 400, 20):
            body[at:at + 4] = motif
        docs.append(body)
    held = heldout_from_arrays(docs, {0, 1, 2, 3}, "motif", VOCAB)
    s = small_settings(probes=("mlm_distance",), mlm_samples=8, distances=(40,))
    for doc in build_mlm_distance(held, s, SPECIAL):
        span = np.asarray(doc.meta["span"])
        assert not np.array_equal(span, motif)
        expected = [doc.meta["copy_start"], doc.meta["target_start"]] if doc.cell[0] == "copy" else [doc.meta["target_start"]]
        assert occurrences(_content(doc), span) == expected
    periodic = heldout_from_arrays([np.resize(np.array([5, 6, 7]), 600)], {0, 1, 2, 3}, "periodic", VOCAB)
    with pytest.raises(ProbeError, match="too repetitive"):
        build_mlm_distance(periodic, s, SPECIAL)


def test_passkey_key_at_the_depth_and_its_masked_repeat_at_the_end(heldout):
    s = small_settings()
    docs = build_passkey(heldout, s, SPECIAL)
    assert len(docs) == len(s.passkey_lengths) * len(s.passkey_depths) * s.passkey_samples
    m, k = s.marker_length, s.key_length
    for doc in docs:
        length, depth = doc.cell
        assert len(doc) == length
        key, marker = np.asarray(doc.meta["key"]), np.asarray(doc.meta["marker"])
        content = _content(doc)
        q = doc.meta["query_start"]
        assert q == length - 2 - k  # the query is the last thing before [SEP]
        assert np.flatnonzero(doc.labels != IGNORE_INDEX).tolist() == list(range(q + 1, q + 1 + k))
        assert (doc.input_ids[q + 1:q + 1 + k] == SPECIAL.mask).all()
        assert occurrences(content, marker) == [doc.meta["key_start"] - m, q - m]
        assert occurrences(content, key) == [doc.meta["key_start"], q]
        assert occurrences(doc.input_ids, key) == [doc.meta["key_start"] + 1]  # once visible: the key itself
        filler = length - 2 - 2 * (m + k)
        assert doc.meta["key_start"] - m == round(depth * filler)  # depth 0: right after [CLS]; 1: before the query
        if depth == 1.0:
            assert doc.meta["key_start"] + k == q - m  # key block immediately followed by the query block


def test_loss_by_position_documents_are_masked_at_the_rate_and_seeded(heldout):
    s = small_settings(position_docs=3, position_mask_prob=0.3)
    docs = build_position_docs(heldout, s, SPECIAL)
    assert [len(d) for d in docs] == [256] * 3
    assert sum(d.meta["natural_document"] for d in docs) == 3  # the held-out documents are long enough
    masked = np.concatenate([d.labels[1:-1] != IGNORE_INDEX for d in docs])
    assert 0.2 < masked.mean() < 0.4
    for d in docs:
        at = d.labels != IGNORE_INDEX
        assert (d.input_ids[at] == SPECIAL.mask).all() and not at[0] and not at[-1]
    again = build_position_docs(heldout, s, SPECIAL)
    assert all(np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.labels, b.labels) for a, b in zip(docs, again))
    other = build_position_docs(heldout, small_settings(position_docs=3, seed=1), SPECIAL)
    assert not np.array_equal(other[0].labels, docs[0].labels)


def test_a_cell_does_not_depend_on_the_other_cells(heldout):
    one = build_mlm_distance(heldout, small_settings(distances=(64,)), SPECIAL)
    many = build_mlm_distance(heldout, small_settings(distances=(16, 64, 200)), SPECIAL)
    same = [d for d in many if d.meta["distance"] == 64]
    assert all(np.array_equal(a.input_ids, b.input_ids) for a, b in zip(one, same)) and len(one) == len(same)


# --- scoring against models whose answers we know -------------------------------------------------
class LabelOracle(torch.nn.Module):
    """Given the answer: logits put all mass on the label (at every labelled row), as MaskedLMOutput."""

    def forward(self, input_ids, labels=None, cu_seqlens=None, max_seqlen=None, **_):
        logits = torch.full((len(input_ids), VOCAB), -30.0)
        at = labels != IGNORE_INDEX
        logits[at, labels[at]] = 30.0
        return MaskedLMOutput(loss=None, logits=logits, labels=labels)


class PasskeyCopier(torch.nn.Module):
    """Reads only the input: the tokens after [MASK]s' marker are copied from where that marker occurred first."""

    def __init__(self, marker_length: int):
        super().__init__()
        self.m = marker_length

    def forward(self, input_ids, labels=None, cu_seqlens=None, max_seqlen=None, **_):
        logits = torch.zeros(len(input_ids), VOCAB)
        logits[:, 4] = 1.0  # an answer that is always wrong elsewhere
        cu = cu_seqlens.tolist()
        for start, end in zip(cu[:-1], cu[1:]):  # one document at a time: packed documents never mix
            ids = input_ids[start:end].tolist()
            for i in range(len(ids)):
                if ids[i] == SPECIAL.mask and ids[i - 1] != SPECIAL.mask:  # first [MASK] of a run
                    marker = ids[i - self.m:i]
                    first = next(j for j in range(len(ids)) if ids[j:j + self.m] == marker)
                    n = 0
                    while ids[i + n] == SPECIAL.mask:
                        logits[start + i + n, ids[first + self.m + n]] = 10.0
                        n += 1
        return MaskedLMOutput(loss=None, logits=logits, labels=labels)


def test_a_model_given_the_answer_scores_one_everywhere(heldout):
    s = small_settings(batch_tokens=300)  # several documents per forward pass
    res = run_probes(LabelOracle(), heldout, s, special=SPECIAL, model_max_length=256, local_window=8)
    for b in res["mlm_distance"]["buckets"]:
        assert b["accuracy"] == b["baseline_accuracy"] == b["exact_match"] == 1.0 and b["accuracy_gain"] == 0.0
        assert b["beyond_local_window"] == (b["distance"] > 8)
    assert np.all(np.asarray(res["passkey"]["accuracy"]) == 1.0)
    assert all(x["accuracy"] == 1.0 and x["loss"] < 1e-6 for x in res["loss_by_position"]["buckets"])
    assert res["scores"]["passkey/accuracy"] == 1.0 and res["scores"]["loss_by_position/accuracy"] == 1.0
    assert res["loss_by_position"]["buckets"][-1]["count"] > 0


def test_passkey_is_solvable_from_the_input_alone(heldout):
    s = small_settings(probes=("passkey", "mlm_distance"))
    res = run_probes(PasskeyCopier(s.marker_length), heldout, s, special=SPECIAL, model_max_length=256, local_window=8)
    assert np.all(np.asarray(res["passkey"]["accuracy"]) == 1.0)
    assert res["passkey"]["chance"] == pytest.approx(1 / len(heldout.vocabulary()))
    assert res["scores"]["mlm_distance/accuracy"] == 0.0  # it never predicts a span: the two probes are distinct


def test_a_random_model_scores_near_chance(heldout):
    model = tiny_model()
    res = run_probes(model, heldout, small_settings(), special=SPECIAL, model_max_length=256, local_window=8)
    sc = res["scores"]
    for key in ("mlm_distance/accuracy", "mlm_distance/baseline_accuracy", "passkey/accuracy", "loss_by_position/accuracy"):
        # chance is ~1/123; a random model with tied embeddings leans towards tokens of its context, so a bit
        # above it on short documents (the key is in the context), still far from what a trained model gets
        assert sc[key] < 0.1, key
    assert abs(sc["loss_by_position/loss"] - math.log(VOCAB)) < 0.3
    assert res["model"]["max_position_embeddings"] == 256 and not model.training


def test_packed_scoring_equals_one_document_at_a_time(heldout):
    model = tiny_model()
    docs = build_mlm_distance(heldout, small_settings(), SPECIAL)[:8]
    packed = score_documents(model, docs, batch_tokens=10_000)
    alone = score_documents(model, docs, batch_tokens=1)
    assert len(pack_groups([len(d) for d in docs], 10_000)) == 1
    for a, b in zip(packed, alone):
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.predictions, b.predictions)
        np.testing.assert_allclose(a.nll, b.nll, atol=1e-5)


# --- held-out data --------------------------------------------------------------------------------
@pytest.mark.parametrize("compression", [None, "zstd"])
def test_mds_folders_are_read_in_place(tmp_path, compression):
    from streaming import MDSWriter

    docs = random_docs(30, 50, seed=3)
    with MDSWriter(out=str(tmp_path), columns={"input_ids": "ndarray:uint16"}, compression=compression,
                   size_limit=1 << 10) as w:  # several shards
        for d in docs:
            w.write({"input_ids": d.astype(np.uint16)})
    before = sorted(os.listdir(tmp_path))
    got = read_mds_folder(tmp_path)
    assert len(json.loads((tmp_path / "index.json").read_text())["shards"]) > 1
    assert [g.tolist() for g in got] == [d.tolist() for d in docs]
    assert sorted(os.listdir(tmp_path)) == before  # nothing decompressed next to the data
    held = load_heldout(str(tmp_path), special_ids={0, 1, 2, 3}, vocab_size=VOCAB)
    assert held.num_tokens == 30 * 50 and held.fingerprint == heldout_from_arrays(docs, {0, 1, 2, 3}, "x").fingerprint
    with pytest.raises(HeldOutError, match="outside the model's vocabulary"):
        load_heldout(str(tmp_path), special_ids={0, 1, 2, 3}, vocab_size=64)
    with pytest.raises(HeldOutError, match="holds MDS splits .*pass one of them"):
        load_heldout(str(tmp_path.parent), special_ids={0}, vocab_size=VOCAB)


def test_text_corpus_is_tokenized_with_the_models_tokenizer(tmp_path):
    from flexbert.data.tokenizer import train_tokenizer

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    texts = [" ".join(rng.choice(words, size=120)) for _ in range(8)]
    info = train_tokenizer(iter(texts), 320, tmp_path / "tok", length=len(texts), show_progress=False)
    for i, t in enumerate(texts):
        (tmp_path / "corpus").mkdir(exist_ok=True)
        (tmp_path / "corpus" / f"{i}.txt").write_text(t)
    held = load_heldout(str(tmp_path / "corpus"), special_ids={0}, vocab_size=info.vocab_size,
                        tokenizer_dir=str(tmp_path / "tok"))
    assert len(held.docs) == 8 and not set(held.stream().tolist()) & {info.cls_id, info.sep_id, info.mask_id, info.pad_id}
    with pytest.raises(HeldOutError, match="needs the model's tokenizer"):
        load_heldout(str(tmp_path / "corpus"), special_ids={0}, vocab_size=320)


# --- the tool on every model source, the callback, the sweep hook ---------------------------------
CLI_FLAGS = ["--max-length", "128", "--distances", "16,64", "--span-length", "4", "--mlm-samples", "2",
             "--mlm-margin", "4", "--passkey-lengths", "64,128", "--passkey-depths", "0,1", "--passkey-samples", "1",
             "--key-length", "3", "--marker-length", "2", "--position-docs", "1", "--quiet"]
CALLBACK_OPTIONS = {"max_length": 128, "distances": [16, 64], "span_length": 4, "mlm_samples": 2, "mlm_margin": 4,
                    "passkey_lengths": [64, 128], "passkey_depths": [0.0, 1.0], "passkey_samples": 1, "key_length": 3,
                    "marker_length": 2, "position_docs": 1}


def _random_corpus(root):
    """train: the usual repetitive synthetic documents; val: random content (clean probes)."""
    make_corpus(root, n_train=60, n_val=4)
    import shutil

    shutil.rmtree(root / "val")
    write_mds(root / "val", random_docs(8, 300, seed=5, high=VOCAB))
    return root


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny real training run (2 steps) with held-out data named in its config (data.eval_split)."""
    from flexbert.config.loading import load_run_config
    from flexbert.train.builder import build_trainer, finish_run

    tmp = tmp_path_factory.mktemp("lc_run")
    corpus = _random_corpus(tmp / "corpus")
    run = tiny_run(corpus, tmp / "save", max_duration="2ba", save_interval="2ba",
                   data={"eval_split": "val"}, eval_interval="1000ba", eval_subset_num_batches=1)
    built = build_trainer(load_run_config(str(write_yaml(tmp / "run.yaml", run))))
    built.trainer.fit()
    finish_run(built)
    return tmp


def test_cli_runs_on_checkpoint_file_save_folder_and_hf_folder(trained_run, tmp_path, capsys):
    from flexbert.export import save_hf
    from flexbert.long_context.cli import main
    from flexbert.long_context.loading import load_model, newest_checkpoint

    save = trained_run / "save"
    ckpt = save / "ep0-ba2-rank0.pt"
    assert newest_checkpoint(save).name == "latest-rank0.pt" and ckpt.is_file()
    hf = tmp_path / "hf"
    save_hf(load_model(save).model, hf)
    val = str(trained_run / "corpus" / "val")
    sources = {"file": [str(ckpt)], "save_folder": [str(save)], "hf": [str(hf), "--corpus", val]}
    scores = {}
    for name, args in sources.items():
        out = tmp_path / f"out_{name}"
        assert main(args + ["--output", str(out)] + CLI_FLAGS + ["--score", "passkey/accuracy"]) == 0, name
        res = json.loads((out / "results.json").read_text())
        assert (out / "long_context.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert res["source"]["kind"] == {"file": "composer", "save_folder": "save_folder", "hf": "hf"}[name]
        scores[name] = res["scores"]
        last = capsys.readouterr().out.strip().splitlines()[-1]
        assert json.loads(last) == {"score": res["scores"]["passkey/accuracy"], "metric": "passkey/accuracy"}
    # the same weights and the same held-out split (config's data.eval_split vs --corpus): the same figures
    assert scores["file"] == scores["save_folder"]
    for key, value in scores["file"].items():
        assert scores["hf"][key] == pytest.approx(value, abs=1e-5), key
    # an HF folder has no run config: without --corpus the error says what to pass
    assert main([str(hf), "--output", str(tmp_path / "x")] + CLI_FLAGS) == 2
    assert "pass --corpus" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--output", str(tmp_path / "y")] + CLI_FLAGS) == 2
    assert "not a model folder" in capsys.readouterr().err
    # never written into what it reads
    assert main([str(hf), "--corpus", val, "--output", str(hf / "lc")] + CLI_FLAGS) == 2
    assert "is inside MODEL" in capsys.readouterr().err
    assert not (hf / "lc").exists()
    (tmp_path / "plain.txt").write_text("x")  # an output that cannot be created: refused before reading anything
    assert main([str(tmp_path / "nothing-here"), "--output", str(tmp_path / "plain.txt" / "out")] + CLI_FLAGS) == 2
    assert "plain.txt is a file, not a folder" in capsys.readouterr().err
    # a save folder's input is its checkpoint: results may go beside it, where the callback writes them
    assert main([str(save), "--output", str(save / "long_context")] + CLI_FLAGS) == 0
    assert (save / "long_context" / "results.json").is_file()


def test_callback_writes_results_and_logs_them_at_the_end_of_a_phase(tmp_path):
    from flexbert.config.loading import load_run_config
    from flexbert.train.builder import build_trainer, finish_run

    corpus = _random_corpus(tmp_path / "corpus")
    run = tiny_run(corpus, tmp_path / "save", max_duration="2ba", save_interval="2ba",
                   callbacks={"memory": False, "long_context": {**CALLBACK_OPTIONS, "corpus": str(corpus / "val")}})
    built = build_trainer(load_run_config(str(write_yaml(tmp_path / "run.yaml", run))))
    built.trainer.fit()
    finish_run(built)
    res = json.loads((tmp_path / "save" / "long_context" / "results.json").read_text())
    assert res["source"]["kind"] == "training" and res["source"]["batch"] == 2
    assert (tmp_path / "save" / "long_context" / "long_context.png").is_file()
    logged = {}
    for line in (tmp_path / "save" / "metrics.jsonl").read_text().splitlines():
        logged.update({k: v for k, v in json.loads(line).items() if k.startswith("long_context/")})
    assert logged == {f"long_context/{k}": v for k, v in res["scores"].items()}
    assert not [f for f in os.listdir(tmp_path / "save" / "long_context") if ".tmp" in f]


def test_callback_options_and_missing_heldout_data_fail_early(tmp_path):
    from flexbert.config.loading import load_run_config
    from flexbert.train.builder import build_trainer
    from flexbert.train.callbacks import build_callback

    with pytest.raises(ValueError, match="callbacks.long_context: .*max_lenght"):
        build_callback("long_context", {"max_lenght": 128}, where="callbacks.long_context")
    with pytest.raises(ValueError, match=r"callbacks.long_context: passkey_depths are fractions in \[0, 1\]"):
        build_callback("long_context", {"passkey_depths": [2.0]})
    corpus = _random_corpus(tmp_path / "corpus")
    run = tiny_run(corpus, tmp_path / "save", max_duration="2ba", callbacks={"memory": False, "long_context": {}})
    built = build_trainer(load_run_config(str(write_yaml(tmp_path / "run.yaml", run))))
    with pytest.raises(HeldOutError, match="no held-out data .*corpus"):
        built.trainer.fit()  # at fit start, before any step
    assert int(built.trainer.state.timestamp.batch) == 0
    built.trainer.close()


def test_sweep_report_ranks_by_a_probe_figure(tmp_path, monkeypatch):
    import textwrap

    from flexbert.sweep.collect import collect
    from flexbert.sweep.expand import expand
    from flexbert.sweep.report import write_report
    from flexbert.sweep.spec import load_sweep

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text(textwrap.dedent(f"""
        base: {REPO / 'yamls' / 'demo.yaml'}
        variants: [{{name: short}}, {{name: long}}]
        metric: long_context/passkey/accuracy
        output: out
    """))
    sweep = load_sweep(str(tmp_path / "sweep.yaml"))
    assert sweep.maximize  # an accuracy: higher is better
    runs = expand(sweep)
    for run, value in zip(runs, (0.25, 0.75)):  # what the callback or `--output <run_dir>/long_context` leaves
        os.makedirs(os.path.join(run.run_dir, "long_context"))
        with open(os.path.join(run.run_dir, "long_context", "results.json"), "w") as f:
            json.dump({"scores": {"passkey/accuracy": value}}, f)
        open(os.path.join(run.run_dir, "DONE"), "w").close()
    assert probe_score(runs[1].run_dir, "long_context/passkey/accuracy") == 0.75
    assert probe_score(runs[1].run_dir, "long_context/passkey/nothing") is None
    rows = collect(sweep, runs)
    assert [r["long_context/passkey/accuracy"] for r in rows] == [0.25, 0.75]
    md = open(write_report(sweep, rows)["report"]).read()
    assert "| 1 | `long` | 0.7500 |" in md and "| 2 | `short` | 0.2500 |" in md


def test_comparison_table_flags_runs_with_different_probes(heldout, tmp_path):
    a = run_probes(LabelOracle(), heldout, small_settings(), special=SPECIAL, model_max_length=256, local_window=8)
    b = run_probes(LabelOracle(), heldout, small_settings(seed=3), special=SPECIAL, model_max_length=256, local_window=8)
    paths = compare([("a", a), ("a again", a)], tmp_path / "same")
    md = open(paths["markdown"]).read()
    assert "Warning" not in md and "| 200 | 1.000 / 1.000 (+0.000) | 1.000 / 1.000 (+0.000) |" in md
    assert json.loads(open(paths["json"]).read())["a"]["passkey/accuracy"] == 1.0
    assert "Warning" in open(compare([("a", a), ("b", b)], tmp_path / "diff")["markdown"]).read()


# --- the tiny chain: before / after ---------------------------------------------------------------
@pytest.mark.slow
def test_tiny_chain_phases_give_a_before_after_comparison(tmp_path, monkeypatch):
    """yamls/tiny/ phases 1 -> 2 -> 3 (shortened), each probed by the callback with the same settings."""
    from flexbert.config.loading import load_run_config
    from flexbert.long_context.compare import main as compare_main
    from flexbert.train.builder import build_trainer, finish_run

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = tmp_path / "corpus"
    make_corpus(root, n_train=300, n_val=4)
    import shutil

    shutil.rmtree(root / "val")
    write_mds(root / "val", random_docs(6, 1500, seed=9, high=512))
    probe = [f"callbacks.long_context.{k}={json.dumps(v) if isinstance(v, list) else v}"
             for k, v in {**CALLBACK_OPTIONS, "max_length": 1536, "distances": [64, 1024, 1500],
                          "passkey_lengths": [256, 1536]}.items()]
    prev = None
    for phase in ("1-pretrain", "2-context-extension", "3-decay"):
        over = [f"data.local={root}", "data.split=train", f"save_folder={tmp_path / phase}", "max_duration=2ba",
                f"callbacks.long_context.corpus={root / 'val'}", *probe]
        if prev:
            over.append(f"init_from.path={tmp_path / prev / 'latest-rank0.pt'}")
        built = build_trainer(load_run_config(str(REPO / "yamls" / "tiny" / f"{phase}.yaml"), over))
        built.trainer.fit()
        finish_run(built)
        prev = phase
    results = [json.loads((tmp_path / p / "long_context" / "results.json").read_text())
               for p in ("1-pretrain", "2-context-extension", "3-decay")]
    assert [r["trained_context"] for r in results] == [1024, 8192, 8192]
    assert [r["model"]["global_rope_theta"] for r in results] == [10000.0, 160000.0, 160000.0]
    assert len({r["settings_digest"] for r in results}) == 1  # the same probe documents in every phase
    assert results[0]["scores"] != results[1]["scores"]
    out = tmp_path / "cmp"
    assert compare_main([str(tmp_path / p) for p in ("1-pretrain", "2-context-extension", "3-decay")]
                        + ["--output", str(out)]) == 0
    md = (out / "comparison.md").read_text()
    assert "Warning" not in md and "| distance | 1-pretrain | 2-context-extension | 3-decay |" in md
    assert "| 1024 | 8192 " not in md and "| 1-pretrain | 1024 | 10000 |" in md
    assert (out / "comparison.png").is_file()
