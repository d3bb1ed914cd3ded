"""The Ray Data engine of data_prep/convert_to_mds.py: the local engine's samples, on a two-node cluster.

The cluster is real: a head and a worker started as separate `ray start --block` processes with
one CPU each on free ports, shared by this module and stopped by process id at the end (never
`ray stop`, which would end every Ray process on the machine). The S3 tests run moto's server
on 127.0.0.1. Each conversion runs the real command line in a subprocess.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data")
psutil = pytest.importorskip("psutil")

from flexbert.data.convert_ray import plan_parts  # noqa: E402
from flexbert.data.readers import BadInput, Piece  # noqa: E402
from flexbert.data.tokenizer import train_tokenizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _s3_server import credentials_enforced, s3_server  # noqa: E402
from _s3_server import free_port as _free_port  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
CLI = [sys.executable, str(ROOT / "data_prep" / "convert_to_mds.py")]


# --- inputs ---------------------------------------------------------------------------------------
def _sentence(rng, n: int) -> str:
    words = ["data", "model", "token", "stream", "shard", "cluster", "write", "read", "café", "ünïcödé", "日本語", "x = 1"]
    return " ".join(words[i] for i in rng.integers(0, len(words), n))


def make_corpus(root: Path, n_big: int = 400, seed: int = 0) -> Path:
    """A mixed corpus: prose, code (with a tests/ folder to exclude), JSONL.gz with a malformed line,
    Parquet with an empty row, and an uncompressed JSONL big enough to be cut into pieces."""
    rng = np.random.default_rng(seed)
    c = root / "corpus"
    for rel, text in {
        "notes/a.txt": "Plain prose. " + _sentence(rng, 60), "notes/b.md": "# Title\n\n" + _sentence(rng, 200),
        "src/mod.py": "def f(x):\n    return [i * 2 for i in range(x)]\n" * 5, "src/util.rs": "fn main() {}\n",
        "src/tests/test_mod.py": "assert f(1) == [0]\n", "src/blob.bin": "not a known suffix\n",
    }.items():
        (c / rel).parent.mkdir(parents=True, exist_ok=True)
        (c / rel).write_text(text, encoding="utf-8")
    lines = [json.dumps({"text": _sentence(rng, int(rng.integers(3, 80)))}) for _ in range(60)]
    lines[17] = '{"text": "broken'  # malformed: skipped and counted (or the first error in fail mode)
    (c / "web.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [_sentence(rng, int(rng.integers(2, 50))) for _ in range(80)]
    texts[33] = "   "  # an empty row: skipped and counted
    pq.write_table(pa.table({"text": texts}), c / "table.parquet", row_group_size=16)
    big = [json.dumps({"text": _sentence(rng, int(rng.integers(5, 120)))}) for _ in range(n_big)]
    big[n_big // 3] = ""  # a blank line: not a record
    (c / "big.jsonl").write_text("\n".join(big) + "\n", encoding="utf-8")
    return c


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    rng = np.random.default_rng(1)
    docs = [_sentence(rng, 40) for _ in range(50)] + ["def f(x):\n    return [i * 2 for i in range(x)]\n"]
    return train_tokenizer(docs, vocab_size=512, output=tmp_path_factory.mktemp("tok") / "tokenizer", show_progress=False)


def read_mds(folder: Path) -> list[list[int]]:
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    ds = StreamingDataset(local=str(folder), batch_size=1, shuffle=False)
    return [ds[i]["input_ids"].tolist() for i in range(len(ds))]


def convert(inputs, tok, out, *extra: str, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [*CLI, "--input", *map(str, inputs), "--tokenizer", tok.path, "--output", str(out), "--no-progress", *extra]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)


def assert_same_dataset(local: Path, ray_out: Path, splits=("train", "val")) -> None:
    """Every split holds the same samples in the same order; summaries agree on everything but timing."""
    for split in splits:
        a, b = read_mds(local / split), read_mds(ray_out / split)
        assert len(a) == len(b) and a == b, split
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (local, ray_out))
    assert sa["splits"] == sb["splits"]
    assert sa["skipped"] == sb["skipped"]
    assert sa["files"] == sb["files"] and sa["tokenizer"] == sb["tokenizer"]


FLAGS = ("--val-fraction", "0.2", "--chunk-len", "40", "--min-tokens", "4", "--exclude", "tests")


# --- no Ray needed: how the input is cut --------------------------------------------------------------
def test_pieces_of_a_jsonl_file_yield_exactly_the_whole_file(tmp_path):
    lines = [json.dumps({"text": f"doc {i} " + "w" * (i % 17)}) for i in range(200)]
    lines[5] = ""
    lines[6] = "   "
    lines[50] = '{"text": broken'
    lines[120] = '{"body": "no text"}'
    lines[121] = json.dumps({"text": "crlf"}) + "\r"
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def items(files):
        out = []
        for it in _read_all(files):
            out.append((it.text, it.line) if not isinstance(it, BadInput) else (str(it), it.reason))
        return out

    whole = items([f])
    size = f.stat().st_size
    for cuts in ([1], [size // 2], [1, 2, 3, size - 1], list(range(97, size, 211)), [size // 3, size // 3 + 1]):
        bounds = [0, *cuts, None]
        pieces = [Piece(f, a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        got = items(pieces)
        # The same documents and the same FILE:LINE problems; documents of later pieces carry no line.
        assert [x for x, _ in got] == [x for x, _ in whole]
        assert [x for x in got if x[1] in ("malformed_json", "missing_field")] == [
            x for x in whole if x[1] in ("malformed_json", "missing_field")]
    assert f"{f}:51: malformed JSON" in [x for x, _ in whole][50 - 2]

    # Only the piece at byte 0 reports an empty file, after looking at the rest of the file.
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n" * 300 + '{"text": "late"}\n')
    assert [it.text for it in _read_all([Piece(blank, 0, 10), Piece(blank, 10, None)])] == ["late"]
    blank.write_text("\n" * 300)
    got = list(_read_all([Piece(blank, 0, 10), Piece(blank, 10, 200), Piece(blank, 200, None)]))
    assert [(it.reason, it.message) for it in got] == [("empty", "empty file (no JSON records)")]


def _read_all(files):
    from flexbert.data.readers import read_file

    for f in files:
        yield from read_file(f)


def test_plan_parts_is_contiguous_and_balanced():
    files = [["a.txt", 100, 0], ["b.jsonl", 10_000, 0], ["c.jsonl.gz", 3_000, 0], ["d.parquet", 2_000, 0], ["e.txt", 0, 0]]
    parts = plan_parts(files, 4, min_piece_bytes=1000)
    flat = [p for part in parts for p in part]
    # Input order kept; b.jsonl (uncompressed) cut into contiguous ranges; others whole.
    assert [p["file"] for p in flat] == ["a.txt"] + ["b.jsonl"] * (len(flat) - 4) + ["c.jsonl.gz", "d.parquet", "e.txt"]
    ranges = [(p["start"], p["stop"]) for p in flat if p["file"] == "b.jsonl"]
    assert ranges[0][0] == 0 and ranges[-1][1] is None
    assert all(a[1] == b[0] for a, b in zip(ranges[:-1], ranges[1:]))
    assert 3 <= len(parts) <= 4 and all(parts)
    assert plan_parts([["x.jsonl.zst", 10**9, 0]], 8) == [[{"file": "x.jsonl.zst", "start": 0, "stop": None}]]


def test_unreachable_cluster_and_local_only_flags_are_one_line_errors(tok, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "hello"}\n')
    out = tmp_path / "out"
    r = convert([tmp_path / "d.jsonl"], tok, out, "--engine", "ray", "--ray-address", f"127.0.0.1:{_free_port()}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "error: --ray-address 127.0.0.1:" in r.stderr and "cannot connect to a Ray cluster" in r.stderr
    assert not list(tmp_path.glob("out*")), "nothing written"
    r = convert([tmp_path / "d.jsonl"], tok, out, "--resume")
    assert r.returncode == 2 and "--resume needs --engine ray" in r.stderr
    r = convert([tmp_path / "d.jsonl"], tok, "s3://bucket/mds")
    assert r.returncode == 2 and "s3://bucket/mds: object storage needs --engine ray" in r.stderr


# --- a two-node cluster ---------------------------------------------------------------------------------
def _ray_node(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    ports = ["--node-manager-port", "--object-manager-port", "--metrics-export-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port"]
    cmd = [RAY, "start", "--block", "--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
           "--object-store-memory", str(100 << 20), "--include-log-monitor", "false", *args]
    for p in ports:
        cmd += [p, str(_free_port())]
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _processes_of(nodes: list[subprocess.Popen]) -> list[psutil.Process]:
    procs = []
    for n in nodes:
        try:
            p = psutil.Process(n.pid)
            procs += [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    groups = {n.pid for n in nodes}  # start_new_session: each node's processes are in its own group
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) in groups and p not in procs:
                procs.append(p)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    return procs


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and a worker node (1 CPU each) on this machine; yields the head's address."""
    tmp = Path(f"/tmp/rt{os.getpid()}")  # short: Ray's socket paths must fit in 107 bytes
    logs = tmp_path_factory.mktemp("ray-logs")
    env = {**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes = [_ray_node(["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", str(tmp)],
                       logs / "head.log", env)]
    try:
        deadline = time.monotonic() + 90
        while True:
            assert nodes[0].poll() is None, (logs / "head.log").read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the Ray head did not start"
                time.sleep(0.2)
        nodes.append(_ray_node(["--address", address], logs / "worker.log", env))
        while True:  # both nodes registered: `ray status` lists 2 CPUs
            r = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True, env=env)
            if "0.0/2.0 CPU" in r.stdout:
                break
            assert nodes[1].poll() is None, (logs / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, r.stdout + r.stderr
            time.sleep(0.5)
        yield address
    finally:
        procs = _processes_of(nodes)
        for n in nodes:
            try:
                os.killpg(n.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        _, alive = psutil.wait_procs(procs, timeout=20)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
        left = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"Ray processes left behind: {[(p.pid, p.name()) for p in left]}"


def test_cluster_matches_the_local_engine_sample_by_sample(cluster, tok, tmp_path):
    corpus = make_corpus(tmp_path)
    local = tmp_path / "local"
    r = convert([corpus], tok, local, *FLAGS, "--on-error", "skip", "--workers", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "ray"
    r = convert([corpus], tok, out, *FLAGS, "--on-error", "skip", "--engine", "ray", "--ray-address", cluster,
                "--partitions", "5")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_dataset(local, out)
    summary = json.loads((out / "summary.json").read_text())
    parts = summary["engine"]["parts"]  # big.jsonl is cut into 4 pieces; the small files share the last part
    assert 3 <= parts <= 5 and f"with Ray ({parts} parts, {parts} converted now)" in r.stdout
    reasons = summary["skipped"]["by_reason"]
    assert reasons["empty"] == 1 and reasons["malformed_json"] == 1
    assert [e.split(": ")[0] for e in summary["skipped"]["examples"]] == [f"{corpus / 'table.parquet'}:34",
                                                                           f"{corpus / 'web.jsonl.gz'}:18"]
    # Layout: one merged index per split naming the parts' shards, each part its own MDS folder with hashes.
    index = json.loads((out / "train" / "index.json").read_text())
    assert {s["raw_data"]["basename"].split("/")[0] for s in index["shards"]} <= {f"part-{k:05d}" for k in range(5)}
    assert all(s["zip_data"]["hashes"].keys() == {"sha1", "xxh64"} for s in index["shards"])
    assert not list(tmp_path.glob("ray.*")) and not (out / "_work").exists()
    # Training reads either output identically (unshuffled: the same documents in the same batches).
    assert _first_batches(local / "train") == _first_batches(out / "train")


def _first_batches(folder: Path, n: int = 4) -> list[list[int]]:
    from flexbert.config.data import DataConfig
    from flexbert.data.loader import build_train_loader
    from flexbert.data.streaming import RankInfo
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    cfg = DataConfig(local=str(folder), max_seq_len=64, shuffle=False, packing_buffer_docs=4, fetch_size=4)
    ld = build_train_loader(cfg, device_batch_rows=2, special_ids=[0, 1, 2, 3, 4], mask_token_id=4, vocab_size=512,
                            pad_token_id=3, rank_info=RankInfo())
    it = iter(ld)
    out = [next(it)["input_ids"].tolist() for _ in range(n)]
    it.close()
    return out


def test_cluster_stops_at_the_first_bad_input_like_the_local_engine(cluster, tok, tmp_path):
    corpus = make_corpus(tmp_path, n_big=60)
    local = convert([corpus], tok, tmp_path / "local", *FLAGS, "--workers", "1")
    r = convert([corpus], tok, tmp_path / "ray", *FLAGS, "--engine", "ray", "--ray-address", cluster, "--partitions", "4")
    assert local.returncode == r.returncode == 2
    # In input order table.parquet (row 34: empty) comes before web.jsonl.gz (line 18: malformed).
    expected = f"error: {corpus / 'table.parquet'}:34: row 34: column 'text' is empty"
    assert expected in local.stderr and expected in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("ray*")), "a failed run leaves nothing behind"


def _attempts(out: Path) -> list[tuple[str, int]]:
    """(part name, pid) of the attempts in progress: an actor converting a part has a folder
    _work/attempts/part-NNNNN-PID-XXXXXXXX until the part is done."""
    attempts = Path(f"{out}.partial") / "_work" / "attempts"
    try:
        return [("-".join(p.name.split("-")[:2]), int(p.name.split("-")[2])) for p in attempts.iterdir()]
    except (FileNotFoundError, ValueError, IndexError):
        return []


def test_worker_killed_mid_part_is_retried_and_the_dataset_is_the_same(cluster, tok, tmp_path):
    corpus = make_corpus(tmp_path, n_big=3000)
    local = tmp_path / "local"
    assert convert([corpus], tok, local, *FLAGS, "--on-error", "skip", "--workers", "1").returncode == 0
    out = tmp_path / "ray"
    cmd = [*CLI, "--input", str(corpus), "--tokenizer", tok.path, "--output", str(out), "--no-progress", *FLAGS,
           "--on-error", "skip", "--engine", "ray", "--ray-address", cluster, "--partitions", "6"]
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"})
    done = Path(f"{out}.partial") / "_work" / "done"
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and driver.poll() is None and time.monotonic() < deadline:
        for part, pid in _attempts(out):
            if (done / f"{part}.json").exists():
                continue  # finished a moment ago
            os.kill(pid, signal.SIGKILL)
            if not (done / f"{part}.json").exists():  # killed before it could record the part done
                killed = (part, pid)
                break
        time.sleep(0.02)
    stdout, stderr = driver.communicate(timeout=180)
    assert killed is not None, "no part was in progress to kill"
    assert driver.returncode == 0, stderr[-3000:]
    assert_same_dataset(local, out)  # no partial part, nothing twice
    engine = json.loads((out / "summary.json").read_text())["engine"]
    part, pid = killed
    assert not engine["part_workers"][int(part.split("-")[1])].endswith(f":{pid}"), "another process redid the part"
    assert engine["nodes"] == 2, "both nodes converted parts"
    assert not Path(f"{out}.partial").exists() and not psutil.pid_exists(pid)


def test_resume_skips_the_parts_that_completed(cluster, tok, tmp_path):
    corpus = make_corpus(tmp_path, n_big=2000)
    local = tmp_path / "local"
    assert convert([corpus], tok, local, *FLAGS, "--on-error", "skip", "--workers", "1").returncode == 0
    out = tmp_path / "ray"
    args = [*CLI, "--input", str(corpus), "--tokenizer", tok.path, "--output", str(out), "--no-progress", *FLAGS,
            "--on-error", "skip", "--engine", "ray", "--ray-address", cluster, "--partitions", "6"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    done_dir = Path(f"{out}.partial") / "_work" / "done"
    deadline = time.monotonic() + 120
    while driver.poll() is None and time.monotonic() < deadline:
        if done_dir.is_dir() and len(list(done_dir.glob("part-*.json"))) >= 2:
            driver.send_signal(signal.SIGKILL)  # the driver dies mid-run: its actors go with it
            break
        time.sleep(0.02)
    driver.wait(30)
    assert driver.returncode == -signal.SIGKILL, "the run ended before it could be interrupted"
    done = len(list(done_dir.glob("part-*.json")))
    assert 2 <= done < 6 and not out.exists()
    # Without --resume the unfinished run is not silently replaced; with other options it cannot resume.
    r = convert([corpus], tok, out, *FLAGS, "--on-error", "skip", "--engine", "ray", "--ray-address", cluster)
    assert r.returncode == 2 and "holds an unfinished conversion; pass --resume" in r.stderr
    other = [("0.3" if f == "0.2" else f) for f in FLAGS]  # another --val-fraction
    r = convert([corpus], tok, out, *other, "--on-error", "skip", "--engine", "ray", "--ray-address", cluster, "--resume")
    assert r.returncode == 2 and "conversion options differ" in r.stderr
    r = convert([corpus], tok, out, *FLAGS, "--on-error", "skip", "--engine", "ray", "--ray-address", cluster, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    engine = json.loads((out / "summary.json").read_text())["engine"]
    assert engine["parts"] == 6 and engine["parts_converted_now"] == 6 - done
    assert_same_dataset(local, out)


# --- object storage (moto on loopback) ----------------------------------------------------------------
@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1 with bucket 'corpus'; yields the environment pointing at it."""
    with s3_server("corpus") as (env, client):
        yield env, client


def _upload(client, folder: Path, prefix: str) -> None:
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            client.upload_file(str(f), "corpus", f"{prefix}/{f.relative_to(folder).as_posix()}")


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="corpus", Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_s3_in_and_out_then_training_streams_it_back(cluster, s3, tok, tmp_path):
    env, client = s3
    corpus = make_corpus(tmp_path, n_big=200)
    _upload(client, corpus, "raw")
    local = tmp_path / "local"
    assert convert([corpus], tok, local, *FLAGS, "--on-error", "skip", "--workers", "1").returncode == 0
    r = convert(["s3://corpus/raw"], tok, "s3://corpus/mds", *FLAGS, "--on-error", "skip", "--engine", "ray",
                "--ray-address", cluster, "--partitions", "3", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    keys = _keys(client, "mds/")
    assert "mds/summary.json" in keys and "mds/train/index.json" in keys and "mds/val/index.json" in keys
    assert any(k.startswith("mds/train/part-00000/shard.") for k in keys)
    assert not [k for k in keys if "/_work/" in k], "the work records are removed when the run is finished"
    # The same samples as the local engine (files are named by their URLs, so compare the rest).
    copy = tmp_path / "copy"
    for k in keys:
        client.download_file("corpus", k, str(_mkparent(copy / k[len("mds/"):])))
    for split in ("train", "val"):
        assert read_mds(local / split) == read_mds(copy / split)
    summary, local_summary = (json.loads((p / "summary.json").read_text()) for p in (copy, local))
    assert summary["splits"] == local_summary["splits"] and summary["skipped"]["by_reason"] == local_summary["skipped"]["by_reason"]
    # The bucket is listed like a folder is walked: same files (hidden, tests/, unknown suffixes left out), same order.
    assert summary["files"] == [f.replace(str(corpus), "s3://corpus/raw") for f in local_summary["files"]]
    # An existing output is refused without --overwrite, naming the URL.
    r = convert(["s3://corpus/raw"], tok, "s3://corpus/mds", "--engine", "ray", "--ray-address", cluster, env=env)
    assert r.returncode == 2 and "error: s3://corpus/mds already exists; pass --overwrite" in r.stderr

    # Training streams the shards from the bucket into a local cache.
    sys.path.insert(0, str(Path(__file__).parent))
    from _train_support import run_train, tiny_run, write_yaml

    run = tiny_run(tmp_path / "unused", max_duration="3ba", loggers={"jsonl": str(tmp_path / "metrics.jsonl")})
    run["data"].update(local=str(tmp_path / "cache"), remote="s3://corpus/mds", split="train")
    run["model"]["vocab_size"] = 512
    cfg = write_yaml(tmp_path / "run.yaml", run)
    t = run_train(str(cfg), env=env, timeout=300)
    assert t.returncode == 0, t.stderr[-3000:]
    assert list((tmp_path / "cache" / "train").glob("part-*/shard.*")), "shards were downloaded into the cache"
    losses = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = {m["step"]: m["loss/train/total"] for m in losses if "loss/train/total" in m}
    assert sorted(losses) == [0, 1, 2] and all(np.isfinite(v) for v in losses.values())


def _mkparent(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def test_s3_wrong_or_missing_credentials_are_one_line_errors_naming_the_url(s3, tok, tmp_path):
    env, client = s3
    (tmp_path / "d.jsonl").write_text('{"text": "hello"}\n')
    assert convert([tmp_path / "d.jsonl"], tok, tmp_path / "mds", "--workers", "1").returncode == 0
    _upload(client, tmp_path / "mds", "creds-test")
    with credentials_enforced(env):
        for creds in ({"AWS_ACCESS_KEY_ID": "wrong", "AWS_SECRET_ACCESS_KEY": "wrong"},
                      {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}):
            for inputs, out in (([tmp_path / "d.jsonl"], "s3://corpus/out"), (["s3://corpus/raw"], tmp_path / "out")):
                r = convert(inputs, tok, out, "--engine", "ray", "--num-cpus", "1", env={**env, **creds}, timeout=120)
                assert r.returncode == 2, r.stderr[-2000:]
                err = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
                assert len(err) == 1 and "Traceback" not in r.stderr
                assert err[0].startswith(f"error: {'s3://corpus/out' if isinstance(out, str) else 's3://corpus/raw'}")
                assert "check the credentials" in err[0]
        # Training from the bucket with a wrong key: refused before step 0, one line naming the key and the index.
        sys.path.insert(0, str(Path(__file__).parent))
        from _train_support import run_train, tiny_run, write_yaml

        run = tiny_run(tmp_path / "unused", max_duration="2ba", loggers={"jsonl": str(tmp_path / "metrics.jsonl")})
        run["data"].update(local=str(tmp_path / "cache"), remote="s3://corpus/creds-test", split="train")
        t = run_train(str(write_yaml(tmp_path / "run.yaml", run)), env={**env, "AWS_ACCESS_KEY_ID": "wrong"})
        assert t.returncode == 2 and "Traceback" not in t.stderr, t.stderr[-3000:]
        assert "data.remote s3://corpus/creds-test/train/index.json: the credentials were refused" in t.stderr

