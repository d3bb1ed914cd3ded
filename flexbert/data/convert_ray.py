"""The Ray Data engine of data_prep/convert_to_mds.py (``--engine ray``): the same samples, on a cluster.

The driver lists the inputs (local paths, ``s3://`` / ``gs://`` prefixes), cuts them into
*parts* -- runs of consecutive files in input order, where an uncompressed JSONL file larger
than a part is cut at line boundaries into :class:`~flexbert.data.readers.Piece` s -- and
saves that plan. Ray Data hands the parts to a pool of actors (one CPU each, the tokenizer
loaded once per actor). An actor converts a whole part with the local engine's own functions
(``iter_documents``, ``encode_documents``, ``SampleWriter``: the split hash, ``--chunk-len``,
``--min-tokens``, the ``FILE:LINE`` policy) into one MDS folder per split with its own
``MDSWriter`` (to disk, or uploaded shard by shard to the bucket), then records the part as
done. When every part is done the driver joins the parts' indexes with Streaming's
``merge_index``, in part order, so each split is one StreamingDataset, and writes one
``summary.json``.

Layout (OUTPUT, or OUTPUT.partial while unfinished on disk)::

    train/index.json                 merged: shards named part-00000/shard.00000.mds.zstd, ...
    train/part-00000/index.json      one part's own MDS folder
    train/part-00000/shard.00000.mds.zstd
    val/...
    summary.json
    _work/plan.json, _work/done/part-NNNNN.json, _work/attempts/   (removed when finished)

Because parts are consecutive runs of the input and are merged in order, each split holds
exactly the local engine's samples in the local engine's order; only the shard boundaries
differ (every part starts new shards).

Faults: an attempt writes into its own folder (a bucket: re-uploads the same bytes) and a part
counts as done only once its record in ``_work/done`` exists, written last; Ray restarts a
killed actor and retries its part. Nothing looks finished before the merged indexes exist: on
disk the dataset appears under OUTPUT only by the final rename; in a bucket ``summary.json``
is written after the merged indexes and ``_work/`` is deleted last. ``resume=True`` reuses the
parts already done by an interrupted run with the same plan.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
import traceback
import uuid
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flexbert.data.convert import (
    ConvertConfig,
    SampleWriter,
    _batched,
    _SplitStats,
    _summary,
    encode_documents,
    no_documents_error,
    no_files_error,
    open_writers,
    split_names,
    warn_empty_splits,
)
from flexbert.data.readers import BadInput, InputError, Piece, RemoteFile, expand_any, file_kind, filesystem_for, is_url, iter_documents
from flexbert.data.tokenizer import TokenizerInfo, load_tokenizer
from flexbert.outputs import atomic_write_text, check_output_dir, install_output_dir

__all__ = ["RayOptions", "convert_ray", "plan_parts"]

log = logging.getLogger(__name__)

_WORK = "_work"
_MAX_LOGGED = 20  # skipped inputs logged and kept as examples (the local engine's max_logged)
# Variables the driver passes on to Ray workers (when set): object-storage endpoints and credentials.
_FORWARDED_ENV = (
    "S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
    "AWS_REGION", "AWS_PROFILE", "AWS_EC2_METADATA_DISABLED", "GOOGLE_APPLICATION_CREDENTIALS", "GCS_KEY", "GCS_SECRET",
)


@dataclass
class RayOptions:
    """How the Ray engine runs (the --ray-* flags of data_prep/convert_to_mds.py).

    Args:
        address: None starts a local Ray with `num_cpus` CPUs; "auto" or "HOST:PORT" joins a
            running cluster (``ray start --head``).
        num_cpus: a local Ray's CPUs (default: all); on a cluster, how many tokenizer actors
            (default: all of the cluster's CPUs). One actor per CPU.
        partitions: number of parts (default: 2 per actor, more when the input exceeds 256 MiB
            per part). A resumed run keeps the plan's number.
        resume: continue an interrupted run with the same inputs and options, skipping the
            parts it completed.
        max_retries: times Ray retries a part whose actor died (a killed worker or node).
        min_piece_bytes: smallest piece an uncompressed JSONL file is cut into.
    """

    address: str | None = None
    num_cpus: int | None = None
    partitions: int | None = None
    resume: bool = False
    max_retries: int = 3
    min_piece_bytes: int = 1 << 16

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"--num-cpus must be at least 1, got {self.num_cpus}")
        if self.partitions is not None and self.partitions < 1:
            raise ValueError(f"--partitions must be at least 1, got {self.partitions}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")


# --- where the output goes: a folder, or a bucket prefix ------------------------------------
class _Disk:
    """The run's folder on a (shared) file system: OUTPUT.partial, renamed to OUTPUT at the end."""

    remote = False

    def __init__(self, root: str):
        self.root = root

    def url(self, *rel: str) -> str:
        return os.path.join(self.root, *rel)

    def exists(self, *rel: str) -> bool:
        return os.path.exists(self.url(*rel))

    def read_text(self, *rel: str) -> str:
        return Path(self.url(*rel)).read_text(encoding="utf-8")

    def write_text(self, text: str, *rel: str) -> None:
        atomic_write_text(self.url(*rel), text)

    def list(self, *rel: str) -> list[str]:
        folder = self.url(*rel)
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []

    def delete(self, *rel: str) -> None:
        path = self.url(*rel)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)


class _Bucket:
    """A prefix in object storage (s3://, gs://), through pyarrow's file systems."""

    remote = True

    def __init__(self, root: str):
        self.root = root.rstrip("/")

    def url(self, *rel: str) -> str:
        return "/".join([self.root, *rel])

    def _fs(self, *rel: str):
        return filesystem_for(self.url(*rel))

    def exists(self, *rel: str) -> bool:
        import pyarrow.fs as pafs

        fs, path = self._fs(*rel)
        return fs.get_file_info(path).type != pafs.FileType.NotFound

    def read_text(self, *rel: str) -> str:
        fs, path = self._fs(*rel)
        with fs.open_input_stream(path) as f:
            return f.read().decode("utf-8")

    def write_text(self, text: str, *rel: str) -> None:
        fs, path = self._fs(*rel)
        with fs.open_output_stream(path) as f:  # an object appears whole or not at all
            f.write(text.encode("utf-8"))

    def list(self, *rel: str) -> list[str]:
        import pyarrow.fs as pafs

        fs, path = self._fs(*rel)
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return sorted(i.base_name for i in infos)

    def delete(self, *rel: str) -> None:
        """Delete an object, or everything under a prefix."""
        url = self.url(*rel)
        if url.startswith("s3://"):
            # boto3, not pyarrow: pyarrow leaves an empty "folder/" marker object behind a deletion.
            import boto3

            bucket, _, key = url[len("s3://"):].partition("/")
            client = boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL"))
            keys = [key] if key else []
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key.rstrip("/") + "/" if key else "")
            keys += [o["Key"] for page in pages for o in page.get("Contents", [])]
            for i in range(0, len(keys), 1000):
                client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
            return
        import pyarrow.fs as pafs

        fs, path = self._fs(*rel)
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.File:
            fs.delete_file(path)
        elif kind == pafs.FileType.Directory:
            fs.delete_dir(path)


def _location(root: str):
    return _Bucket(root) if is_url(root) else _Disk(root)


def _access_error(url: str, e: BaseException) -> ValueError:
    text = " ".join(str(e).split())
    return ValueError(f"{url}: cannot access ({text}); check the credentials (AWS_ACCESS_KEY_ID / "
                      f"AWS_SECRET_ACCESS_KEY, or gcloud's) and S3_ENDPOINT_URL")


# --- the plan: parts of the input ------------------------------------------------------------
def _file_json(f) -> list:
    if isinstance(f, RemoteFile):
        return [f.url, f.size, f.mtime]
    st = f.stat()
    return [str(f), st.st_size, st.st_mtime_ns]


def _as_file(name: str):
    return RemoteFile(name) if is_url(name) else Path(name)


def _splittable(name: str) -> bool:
    p = Path(name.rsplit("/", 1)[-1])
    return file_kind(p) == "jsonl" and p.suffix.lower() in (".jsonl", ".ndjson")


def plan_parts(files: list[list], partitions: int, min_piece_bytes: int = 1 << 16) -> list[list[dict]]:
    """Cut the input into about `partitions` parts of consecutive pieces with similar byte counts.

    Args:
        files: [name, size, mtime] per input file, in input order.
        partitions: wanted number of parts.
        min_piece_bytes: an uncompressed JSONL file is cut into pieces of about
            max(total / partitions, min_piece_bytes) bytes; other files are one piece each.
    Returns:
        parts, each a list of {"file", "start", "stop"} pieces; never empty parts.
    """
    total = sum(size for _, size, _ in files)
    target = max(total / max(partitions, 1), 1.0)
    piece_bytes = max(int(target), min_piece_bytes)
    pieces: list[tuple[dict, int]] = []
    for name, size, _ in files:
        if _splittable(name) and size > piece_bytes:
            n = max(1, round(size / piece_bytes))
            bounds = [size * i // n for i in range(n)] + [None]
            for a, b in zip(bounds[:-1], bounds[1:]):
                pieces.append(({"file": name, "start": a, "stop": b}, (size if b is None else b) - a))
        else:
            pieces.append(({"file": name, "start": 0, "stop": None}, size))
    parts: list[list[dict]] = []
    offset, current = 0, -1
    for piece, size in pieces:
        k = min(partitions - 1, int((offset + size / 2) // target))  # by the piece's middle: balanced, monotone
        if k != current:
            parts.append([])
            current = k
        parts[-1].append(piece)
        offset += size
    return parts


def _part_name(k: int) -> str:
    return f"part-{k:05d}"


def _tokenizer_files(info: TokenizerInfo) -> dict[str, str]:
    """The tokenizer folder's files, shipped to the actors (no shared file system needed)."""
    path = Path(info.path)
    folder, main = (path, path / "tokenizer.json") if path.is_dir() else (path.parent, path)
    files = {"tokenizer.json": main.read_text(encoding="utf-8")}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).is_file():
            files[name] = (folder / name).read_text(encoding="utf-8")
    return files


_PLAN_OPTIONS = ("text_field", "on_error", "include", "exclude", "val_fraction", "compression", "chunk_len",
                 "min_tokens", "shard_size", "batch_docs", "batch_chars")


def _options(cfg: ConvertConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items() if k in _PLAN_OPTIONS}


# --- one part, in an actor -----------------------------------------------------------------------
class _LazyWriters(dict):
    """split -> MDSWriter, opened at the first sample of that split (a part writes no empty folders)."""

    def __init__(self, out_for, token_dtype: str, cfg: ConvertConfig):
        super().__init__()
        self._out_for, self._dtype, self._cfg = out_for, token_dtype, cfg

    def __missing__(self, split: str):
        writer = open_writers({split: self._out_for(split)}, self._dtype, self._cfg)[split]
        self[split] = writer
        return writer


def run_part(job: dict, cfg: ConvertConfig, info: TokenizerInfo, part: dict) -> dict:
    """Convert one part: read its pieces, tokenize, write one MDS folder per split, record it done.

    Returns a JSON-able result: {"status": "done", ...stats} | {"status": "bad_input", "bad": ...}
    (stops at the first bad input under on_error="fail") | {"status": "error", ...} (anything else).
    """
    k, name = part["index"], _part_name(part["index"])
    where = _location(job["work"])
    if where.remote:  # shards are staged here, uploaded as they are written
        attempt = tempfile.mkdtemp(prefix=f"flexbert-{name}-")
    else:  # the attempt's own folder, renamed into place when complete
        attempt = where.url(_WORK, "attempts", f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")

    def out_for(split: str):
        local = os.path.join(attempt, split)
        return (local, where.url(split, name)) if where.remote else local

    t0, cpu0 = time.perf_counter(), time.process_time()
    skipped: Counter = Counter()
    examples: list[str] = []
    writers = _LazyWriters(out_for, info.token_dtype, cfg)
    sink = SampleWriter(writers, cfg, skipped, splits=job["splits"])
    try:
        pieces = [Piece(_as_file(p["file"]), p["start"], p["stop"]) for p in part["pieces"]]
        docs = iter_documents(pieces, cfg.text_field, cfg.on_error, skipped, max_logged=_MAX_LOGGED, examples=examples)
        for texts in _batched(docs, cfg.batch_docs, cfg.batch_chars):
            sink.add(*encode_documents(info, texts, cfg.val_fraction))
        for w in writers.values():
            w.finish()
        if not where.remote:
            for split in writers:
                dst = where.url(split, name)  # may exist: left by an attempt killed after its rename, before its record
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                install_output_dir(os.path.join(attempt, split), dst)
        record = {
            "status": "done", "part": k, "splits": sorted(writers), "stats": {s: st.to_json() for s, st in sink.stats.items()},
            "skipped": dict(skipped), "examples": examples, "host": socket.gethostname(), "pid": os.getpid(),
            "seconds": round(time.perf_counter() - t0, 3), "cpu_seconds": round(time.process_time() - cpu0, 3),
            "node": _node_id(),
        }
        where.write_text(json.dumps(record), _WORK, "done", f"{name}.json")
        return record
    except InputError as e:
        return {"status": "bad_input", "part": k, "bad": dataclasses.asdict(e.bad)}
    except Exception as e:  # noqa: BLE001 - reported by the driver with this part's name
        return {"status": "error", "part": k, "error": f"{type(e).__name__}: {' '.join(str(e).split())}",
                "traceback": traceback.format_exc(), "host": socket.gethostname()}
    finally:
        for w in writers.values():
            w.cancel_future_jobs()
        shutil.rmtree(attempt, ignore_errors=True)


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - diagnostics only
        return None


class _PartWorker:
    """A Ray Data actor: loads the tokenizer once, then converts the parts it is given."""

    def __init__(self, job_json: str):
        # One CPU per actor: tokenizers' own thread pool would oversubscribe the node.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        import streaming  # noqa: F401 - imports torch: paid once per actor here, not by its first part
        self.job = json.loads(job_json)
        if os.path.isdir(self.job["cwd"]):
            os.chdir(self.job["cwd"])  # relative paths mean what they mean to the driver (shared file systems)
        self.cfg = ConvertConfig(**self.job["cfg"])
        folder = tempfile.mkdtemp(prefix="flexbert-tokenizer-")
        for fname, text in self.job["tokenizer_files"].items():
            Path(folder, fname).write_text(text, encoding="utf-8")
        self.info = dataclasses.replace(load_tokenizer(folder), path=self.job["tokenizer"])
        shutil.rmtree(folder, ignore_errors=True)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        out = [json.dumps(run_part(self.job, self.cfg, self.info, json.loads(p))) for p in batch["part"]]
        return {"result": np.array(out, dtype=object)}


# --- the driver -------------------------------------------------------------------------------------
def _ray_init(opts: RayOptions):
    import ray

    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
    # Workers import flexbert like this process does (a checkout without `pip install` included).
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    kwargs: dict[str, Any] = dict(runtime_env={"env_vars": env}, logging_level=logging.WARNING, log_to_driver=False)
    if opts.address is None:
        # "local": a new Ray of our own, never a cluster that happens to run on this machine
        ray.init(address="local", num_cpus=opts.num_cpus or os.cpu_count(), include_dashboard=False, **kwargs)
    else:
        hint = "start one with `ray start --head` or omit --ray-address for a local Ray"
        try:
            _check_reachable(opts.address)  # ray.init would retry an unreachable address for minutes
            ray.init(address=opts.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ValueError(f"--ray-address {opts.address}: cannot connect to a Ray cluster ({' '.join(str(e).split())}); "
                             f"{hint}") from None
    return True


def _check_reachable(address: str) -> None:
    """Raise ConnectionError unless the cluster's address (resolved like Ray does for "auto") accepts connections."""
    try:  # Ray's own resolution of "auto" / RAY_ADDRESS (a private function: skip the check if it moved)
        from ray._private.services import get_ray_address_from_environment

        address = get_ray_address_from_environment(address, None)
    except (ImportError, AttributeError, TypeError):
        return
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {host}:{port}: {e.strerror or e}") from None


def _check_output(cfg: ConvertConfig, opts: RayOptions, work) -> bool:
    """Refuse an existing output (without --overwrite) or an unfinished run (without --resume).

    Returns True when what is there must be deleted before converting (--overwrite); the caller
    does it once the inputs are listed, so a typo in --input does not cost the old output.
    """
    if work.remote:
        try:
            names = work.list()
            unfinished = work.exists(_WORK, "plan.json")
        except OSError as e:
            raise _access_error(work.root, e) from None
        if unfinished and not opts.resume and not cfg.overwrite:
            raise FileExistsError(f"{work.root} holds an unfinished conversion; pass --resume to continue it, "
                                  "or --overwrite to start over")
        if names and not unfinished and not cfg.overwrite:
            raise FileExistsError(f"{work.root} already exists; pass --overwrite to replace it")
        return bool(names) and cfg.overwrite and not (opts.resume and unfinished)

    inputs = [("--input", [p for p in cfg.inputs if not is_url(str(p))]), ("--tokenizer", cfg.tokenizer)]
    check_output_dir(cfg.output, inputs=inputs, overwrite=cfg.overwrite)
    if not os.path.exists(work.root) or opts.resume:
        return False
    if not cfg.overwrite:
        raise FileExistsError(f"{work.root} holds an unfinished conversion; pass --resume to continue it, "
                              "or --overwrite to start over")
    return True  # the unfinished run is discarded; an old OUTPUT is replaced only at the end


def _load_plan(work, plan: dict, opts: RayOptions) -> dict | None:
    """The saved plan when resuming (checked against this run's), else None."""
    if not (opts.resume and work.exists(_WORK, "plan.json")):
        if opts.resume:
            log.info("nothing to resume in %s: starting a new conversion", work.root)
        return None
    saved = json.loads(work.read_text(_WORK, "plan.json"))
    for key, what in (("files", "input files (names, sizes, times)"), ("options", "conversion options"),
                      ("tokenizer_sha1", "tokenizer")):
        if saved.get(key) != plan[key]:
            raise ValueError(f"cannot --resume {work.root}: its {what} differ from this run's; rerun without "
                             "--resume and with --overwrite to start over")
    if opts.partitions is not None and opts.partitions != saved["partitions"]:
        raise ValueError(f"cannot --resume {work.root} with --partitions {opts.partitions}: it was planned with "
                         f"{saved['partitions']}; leave --partitions out")
    return saved


def _merge(work, splits: list[str], records: dict[int, dict]) -> None:
    from streaming.base.util import merge_index

    for split in splits:
        parts = [_part_name(k) for k in sorted(records) if split in records[k]["splits"]]
        if work.exists(split, "index.json"):
            work.delete(split, "index.json")  # a merge interrupted by a kill is redone
        if not parts:
            work.write_text(json.dumps({"version": 2, "shards": []}), split, "index.json")
            continue
        urls = [work.url(split, p, "index.json") for p in parts]
        # merge_index logs warnings about its temporary folder and an existing split folder
        with _quiet("root", "streaming.base.storage.upload"):
            merge_index(urls, work.url(split), keep_local=not work.remote)


class _quiet:
    """Raise the level of some loggers for a while (Ray Data's progress notes, Streaming's upload notes)."""

    def __init__(self, *names: str, level: int = logging.ERROR):
        self.names, self.level, self.saved = names, level, {}

    def __enter__(self):
        for name in self.names:
            logger = logging.getLogger(name)
            self.saved[name] = logger.level
            logger.setLevel(self.level)

    def __exit__(self, *exc):
        for name, level in self.saved.items():
            logging.getLogger(name).setLevel(level)


def convert_ray(cfg: ConvertConfig, opts: RayOptions | None = None) -> dict:
    """Convert with Ray Data; returns the summary (also OUTPUT/summary.json).

    The samples of each split equal the local engine's (same documents, split, chunks, order);
    the shards are cut per part. See the module docstring for layout, faults and resume.

    Raises:
        InputError: bad input under on_error="fail" (the first in input order), no documents.
        FileExistsError: OUTPUT exists (no --overwrite), or an unfinished run (no --resume).
        ValueError: an unreachable bucket or cluster, a --resume whose plan differs.
        TokenizerError: the tokenizer folder is unusable.
        RuntimeError: a part failed on a worker for another reason (its traceback is logged).
    """
    opts = opts or RayOptions()
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise ValueError("--engine ray needs Ray Data: pip install 'flexbert[cluster]' (or 'ray[data]')") from None
    start = time.perf_counter()
    cfg = dataclasses.replace(cfg, output=str(cfg.output))
    work = _Bucket(cfg.output) if is_url(cfg.output) else _Disk(f"{cfg.output.rstrip('/')}.partial")
    info = load_tokenizer(cfg.tokenizer)
    clear = _check_output(cfg, opts, work)
    files = expand_any(cfg.inputs, cfg.include, cfg.exclude)
    if not files:
        raise no_files_error(cfg)
    if clear:
        log.warning("--overwrite: deleting %s before converting%s", work.root,
                    " (a bucket has no atomic replace)" if work.remote else "")
        work.delete()
    file_rows = [_file_json(f) for f in files]
    tok_files = _tokenizer_files(info)
    plan = {"files": file_rows, "options": _options(cfg),
            "tokenizer_sha1": hashlib.sha1(json.dumps(tok_files, sort_keys=True).encode()).hexdigest()}

    import ray

    saved = _load_plan(work, plan, opts)  # before starting Ray: a mismatch fails fast
    started_ray = _ray_init(opts)
    bad_input = False
    try:
        if saved is None:
            actors = opts.num_cpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
            total = sum(size for _, size, _ in file_rows)
            partitions = opts.partitions or max(2 * actors, math.ceil(total / (256 << 20)))
            plan.update(partitions=partitions, parts=plan_parts(file_rows, partitions, opts.min_piece_bytes))
            try:
                work.write_text(json.dumps(plan), _WORK, "plan.json")
            except OSError as e:
                raise _access_error(work.url(_WORK, "plan.json"), e) from None
        else:
            plan = saved
        parts = plan["parts"]
        done = {int(n[len("part-"):-len(".json")]) for n in work.list(_WORK, "done") if n.endswith(".json")}
        todo = [k for k in range(len(parts)) if k not in done]
        log.info("converting %d files in %d parts (%d done before) with tokenizer %s to %s", len(files), len(parts),
                 len(done), info.path, cfg.output)
        if todo:
            _run_parts(cfg, opts, work, info, tok_files, parts, todo)
        records = {k: json.loads(work.read_text(_WORK, "done", f"{_part_name(k)}.json")) for k in range(len(parts))}
        summary = _finish(cfg, opts, work, info, files, records, plan, start, converted=set(todo))
    except InputError:
        bad_input = True
        raise
    finally:
        if started_ray:
            ray.shutdown()  # first: no actor may write into the folder deleted below
        if bad_input:
            work.delete()  # bad input: like the local engine, leave nothing behind
    warn_empty_splits(summary, cfg)
    return summary


def _run_parts(cfg, opts, work, info, tok_files, parts, todo) -> None:
    import ray

    from tqdm.auto import tqdm

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    job = {"cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
           "tokenizer": str(info.path), "tokenizer_files": tok_files, "work": work.root, "splits": split_names(cfg.val_fraction),
           "cwd": os.getcwd()}
    actors = min(len(todo), opts.num_cpus or max(1, int(ray.cluster_resources().get("CPU", 1))))
    items = [{"part": json.dumps({"index": k, "pieces": parts[k]})} for k in todo]
    with warnings.catch_warnings():
        # Ray 2.60 deprecates remote args in map_batches; they are the only way to bound retries.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _PartWorker, batch_size=1, num_cpus=1, fn_constructor_args=(json.dumps(job),),
            compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
            max_restarts=-1, max_task_retries=opts.max_retries,
        )
    finished: set[int] = set()
    failures: dict[int, dict] = {}
    rows = ds.iter_rows()
    quiet = _quiet("ray.data")
    quiet.__enter__()
    try:
        with tqdm(total=len(todo), unit="part", desc="convert (ray)", disable=not cfg.progress) as bar:
            for row in rows:
                r = json.loads(row["result"])
                k = r["part"]
                if r["status"] == "error":
                    log.error("%s failed on %s:\n%s", _part_name(k), r.get("host"), r["traceback"])
                    raise RuntimeError(f"{_part_name(k)} failed on a Ray worker ({r['host']}): {r['error']}; the parts done "
                                       f"so far are kept in {work.root}: fix the cause and rerun with --resume")
                if r["status"] == "bad_input":
                    failures[k] = r
                finished.add(k)
                bar.update(1)
                if failures:  # the first bad input in input order: wait for every part before it
                    first = min(failures)
                    if all(p in finished for p in todo if p < first):
                        raise InputError(BadInput(**failures[first]["bad"]))
    except (InputError, RuntimeError):
        raise
    except Exception as e:  # noqa: BLE001 - Ray gave up (an actor died more often than it retries, a lost cluster)
        raise RuntimeError(f"the Ray job failed ({type(e).__name__}: {' '.join(str(e).split())[:500]}); the parts done so far "
                           f"are kept in {work.root}: rerun with --resume") from e
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
        quiet.__exit__(None, None, None)


def _finish(cfg, opts, work, info, files, records, plan, start, converted) -> dict:
    splits = split_names(cfg.val_fraction)
    stats = {s: _SplitStats() for s in splits}
    skipped: Counter = Counter()
    examples: list[str] = []
    new_tokens = 0
    for k in sorted(records):
        r = records[k]
        for s, st in r["stats"].items():
            part_stats = _SplitStats.from_json(st)
            stats[s].merge(part_stats)
            if k in converted:
                new_tokens += sum(n * c for n, c in part_stats.lengths.items())
        skipped.update(r["skipped"])
        examples += r["examples"][: _MAX_LOGGED - len(examples)]
    if sum(s.documents for s in stats.values()) == 0:
        raise no_documents_error(cfg, skipped)
    _merge(work, splits, records)
    elapsed = time.perf_counter() - start
    summary = _summary(cfg, info, files, stats, skipped, examples, elapsed, cfg.output)
    summary["tokens_per_s"] = round(new_tokens / elapsed) if elapsed > 0 else None
    summary["engine"] = {"name": "ray", "parts": len(records), "parts_converted_now": len(converted),
                         "address": opts.address, "partitions": plan["partitions"],
                         "part_seconds": [records[k].get("seconds") for k in sorted(records)],
                         "part_cpu_seconds": [records[k].get("cpu_seconds") for k in sorted(records)],
                         "part_workers": [f"{records[k].get('host')}:{records[k].get('pid')}" for k in sorted(records)],
                         "nodes": len({r.get("node") for r in records.values()})}
    summary["options"].pop("workers", None)  # the local engine's tokenizer processes
    work.write_text(json.dumps(summary, indent=2) + "\n", "summary.json")
    work.delete(_WORK)
    if not work.remote:
        install_output_dir(work.root, cfg.output)
    return summary
