"""What can be known before step 0 is checked before step 0: `--dry-run` exits 2 on it, as the real run does."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def train_main():
    spec = importlib.util.spec_from_file_location("train_cli", REPO / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def dry_run(*args: str) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = train_main()([*args])
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("yaml", ["yamls/demo.yaml", "yamls/tiny/1-pretrain.yaml", "yamls/tiny/2-context-extension.yaml",
                                  "yamls/tiny/3-decay.yaml"])
def test_shipped_cpu_configs_take_a_four_batch_smoke_run(yaml):
    rc, out, err = dry_run(str(REPO / yaml), "max_duration=4ba", "--dry-run")
    assert rc == 0, err
    assert " n/a " not in out  # every row of the schedule table has an LR


@pytest.mark.parametrize("overrides,message", [
    (["max_duration=4ba", "scheduler.t_warmup=20ba"], "scheduler.t_warmup (20ba) + t_decay (0.3dur) exceed max_duration"),
    (["max_duration=30ba", "scheduler.t_warmup=20ba", "scheduler.t_decay=20ba"], "exceed max_duration"),
    (["callbacks.nan_gard=false"], "unknown callback 'nan_gard' at callbacks.nan_gard"),
    (["callbacks.thruput.window=3"], "did you mean 'throughput'"),
    (["model.norm=rmsnorm"], "export_hf runs/demo/hf: this model cannot be exported"),
])
def test_dry_run_exits_2_on_what_would_stop_the_run(overrides, message):
    rc, _, err = dry_run(str(REPO / "yamls/demo.yaml"), "--dry-run", *overrides)
    assert rc == 2
    assert message in err, err
    assert err.count("\n") == 1  # one line


def test_export_hf_under_a_file_is_refused_before_the_run(tmp_path):
    (tmp_path / "file").write_text("x")
    rc, _, err = dry_run(str(REPO / "yamls/demo.yaml"), f"export_hf={tmp_path / 'file' / 'hf'}", "--dry-run")
    assert rc == 2 and "cannot create export_hf" in err and "is a file, not a folder" in err, err


@pytest.mark.parametrize("value,resolved", [("0", "eval_interval: 0"), ("2", "eval_interval: 2"),
                                            ("500ba", "eval_interval: 500ba")])
def test_composer_eval_interval_forms_are_accepted(value, resolved):
    rc, out, err = dry_run(str(REPO / "yamls/demo.yaml"), f"eval_interval={value}", "--dry-run")
    assert rc == 0, err
    assert resolved in out.splitlines()


def test_flags_and_overrides_in_any_order():
    for args in (["--dry-run", "optimizer.lr=1e-3"], ["optimizer.lr=1e-3", "--dry-run"]):
        rc, out, err = dry_run(str(REPO / "yamls/demo.yaml"), *args)
        assert rc == 0, (args, err)
        assert "  lr: 0.001" in out.splitlines()


@pytest.mark.parametrize("export,message", [
    ("data/demo/tokenizer", "export_hf data/demo/tokenizer is the same path as tokenizer"),
    ("data/demo", "export_hf data/demo contains tokenizer data/demo/tokenizer"),
    ("data/demo/mds/hf", "export_hf data/demo/mds/hf is inside data local data/demo/mds"),
    ("runs/demo", "export_hf runs/demo is the same path as save_folder runs/demo"),
    ("runs", "export_hf runs contains save_folder runs/demo"),
])
def test_export_hf_never_replaces_what_the_run_reads_or_its_checkpoints(export, message, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # relative paths of the demo config, resolved in an empty folder
    rc, _, err = dry_run(str(REPO / "yamls/demo.yaml"), f"export_hf={export}", "--dry-run")
    assert rc == 2 and message in err, err
    assert err.count("\n") == 1


def test_export_hf_inside_save_folder_is_fine(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    rc, _, err = dry_run(str(REPO / "yamls/demo.yaml"), "export_hf=runs/demo/hf", "--dry-run")
    assert rc == 0, err


# --- remote paths: credentials and reachability before step 0 (moto's S3 server on loopback) ---------------
sys.path.insert(0, str(Path(__file__).parent))
from _s3_server import credentials_enforced, free_port, s3_server  # noqa: E402


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A bucket 'corpus' holding an MDS index at corpus/mds/train/index.json."""
    with s3_server("corpus") as (env, client):
        client.put_object(Bucket="corpus", Key="mds/train/index.json", Body=b'{"version": 2, "shards": []}')
        client.put_object(Bucket="corpus", Key="ckpt/ep0-ba4-rank0.pt", Body=b"x")
        yield env, client


@pytest.fixture
def s3_env(s3, monkeypatch, tmp_path):
    """The process environment pointed at the server only (no user credentials or config files)."""
    env, client = s3
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env, client


REMOTE_DATA = ["data.remote=s3://corpus/mds", "data.eval_split=null"]


def test_remote_paths_that_work_pass_and_leave_nothing_behind(s3_env, tmp_path):
    env, client = s3_env
    rc, _, err = dry_run(str(REPO / "yamls/demo.yaml"), "--dry-run", *REMOTE_DATA,
                         "save_folder=s3://corpus/runs/demo", f"export_hf={tmp_path / 'hf'}",
                         "load_path=s3://corpus/ckpt/ep0-ba4-rank0.pt")
    assert rc == 0, err
    listed = client.list_objects_v2(Bucket="corpus", Prefix="runs/")
    assert listed.get("KeyCount", 0) == 0, "the write probe is deleted"


@pytest.mark.parametrize("overrides,message", [
    (["data.split=val"], "data.remote s3://corpus/mds/val/index.json: no such object (not an MDS dataset, or the wrong split)"),
    (["load_path=s3://corpus/ckpt/missing.pt"], "load_path s3://corpus/ckpt/missing.pt: no such object; fix load_path"),
    (["save_folder=s3://nobucket/runs"], "save_folder s3://nobucket/runs: bucket 'nobucket' does not exist"),
])
def test_a_remote_path_that_does_not_exist_is_named_with_its_key(s3_env, overrides, message):
    rc, _, err = dry_run(str(REPO / "yamls/demo.yaml"), "--dry-run", *REMOTE_DATA, *overrides)
    assert rc == 2 and message in err, err
    assert err.count("\n") == 1


def test_missing_credentials_name_the_key_the_url_and_the_variable(s3_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    rc, _, err = dry_run(str(REPO / "yamls/demo.yaml"), "--dry-run", *REMOTE_DATA)
    assert rc == 2 and err.count("\n") == 1, err
    assert "data.remote s3://corpus/mds/train/index.json: no AWS credentials are set (AWS_ACCESS_KEY_ID is missing)" in err


def test_refused_credentials_are_named(s3_env, monkeypatch):
    env, _ = s3_env
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGKEY12345")
    with credentials_enforced(env):
        rc, _, err = dry_run(str(REPO / "yamls/demo.yaml"), "--dry-run", *REMOTE_DATA)
    assert rc == 2 and err.count("\n") == 1, err
    assert "data.remote s3://corpus/mds/train/index.json: the credentials were refused" in err
    assert "AKIA..." in err and "WRONGKEY" not in err  # the key is named, not printed


def test_an_unreachable_endpoint_fails_fast_naming_it(s3_env, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: refused at once, one attempt
    monkeypatch.setenv("S3_ENDPOINT_URL", dead)
    rc, _, err = dry_run(str(REPO / "yamls/demo.yaml"), "--dry-run", *REMOTE_DATA)
    assert rc == 2 and err.count("\n") == 1, err
    assert f"data.remote s3://corpus/mds/train/index.json: cannot reach {dead} within 5 s" in err
