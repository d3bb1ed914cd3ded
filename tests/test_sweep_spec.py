"""The sweep file and its expansion: grid products, named variants, seeds, stable safe names,
strict errors that name the key and the file, and the scheduler script parsed back with shlex."""
from __future__ import annotations

import os
import shlex
import textwrap

import pytest

from flexbert.config.strict import ConfigError
from flexbert.sweep.expand import expand, launch_argv
from flexbert.sweep.runner import validate_runs, write_script
from flexbert.sweep.spec import load_sweep, with_metric

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "yamls", "demo.yaml")


def write_sweep(tmp_path, body: str, name: str = "sweep.yaml") -> str:
    (tmp_path / "base.yaml").write_text("run_name: x\n")
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_grid_axes_combine_as_a_product_with_seeds_innermost(tmp_path):
    path = write_sweep(tmp_path, """
        base: base.yaml
        axes:
          norm: {model.norm: [layernorm, rmsnorm]}
          lr: {optimizer.lr: [1.0e-3, 3.0e-3]}
        seeds: [0, 1]
        output: out
    """)
    runs = expand(load_sweep(path))
    assert [r.name for r in runs] == [
        f"norm={n}__lr={lr}__seed={s}" for n in ("layernorm", "rmsnorm") for lr in ("0.001", "0.003") for s in (0, 1)
    ]
    last = runs[-1]
    assert last.variant == "norm=rmsnorm__lr=0.003" and last.seed == 1
    assert last.override_dict() == {"model.norm": "rmsnorm", "optimizer.lr": 0.003}
    assert last.run_dir == os.path.join("out", "runs", last.name)


def test_variants_shorthand_gives_plain_names_and_sweep_overrides_apply_to_all(tmp_path):
    path = write_sweep(tmp_path, """
        base: base.yaml
        overrides: {max_duration: 10ba, model: {hidden_size: 64}}
        variants:
          - name: baseline
          - name: swiglu
            overrides: {model.hidden_activation: silu}
    """)
    sweep = load_sweep(path)
    runs = expand(sweep)
    assert [r.name for r in runs] == ["baseline__seed=0", "swiglu__seed=0"]  # default seeds: [0]
    assert runs[0].override_dict() == {"max_duration": "10ba", "model.hidden_size": 64}  # nested keys flattened
    assert runs[1].override_dict()["model.hidden_activation"] == "silu"
    assert sweep.output == os.path.join("runs", "sweeps", "sweep")  # default output from the file name


def test_tied_grid_keys_are_zipped_and_variants_axis_combines_with_grid(tmp_path):
    path = write_sweep(tmp_path, """
        base: base.yaml
        axes:
          mlp: {model.mlp: [glu, mlp], model.intermediate_size: [192, 288]}
          block:
            - {name: pre, overrides: {model.layer_layout: prenorm}}
            - {name: post, overrides: {model.layer_layout: postnorm}}
    """)
    runs = expand(load_sweep(path))
    assert [r.variant for r in runs] == ["mlp=glu-192__block=pre", "mlp=glu-192__block=post",
                                         "mlp=mlp-288__block=pre", "mlp=mlp-288__block=post"]
    assert runs[2].override_dict() == {"model.mlp": "mlp", "model.intermediate_size": 288, "model.layer_layout": "prenorm"}


def test_names_are_stable_and_filesystem_safe(tmp_path):
    path = write_sweep(tmp_path, """
        base: base.yaml
        axes:
          data: {data.local: [/data/a b, "s3://bucket/x"]}
        seeds: [3]
    """)
    first = [r.name for r in expand(load_sweep(path))]
    assert first == [r.name for r in expand(load_sweep(path))]  # same file -> same names, same order
    assert first == ["data=data-a-b__seed=3", "data=s3---bucket-x__seed=3"]
    for name in first:
        assert shlex.quote(name) == name and "/" not in name  # safe as a folder and in a shell


@pytest.mark.parametrize("body, message", [
    ("base: base.yaml\nseeds: [0]\naxis: {}\n", "unknown key 'axis' in {path}; did you mean 'axes'?"),
    ("base: base.yaml\nvariants:\n  - name: a\n    overides: {x: 1}\n", "unknown key 'variants[0].overides' in {path}; did you mean 'overrides'?"),
    ("base: base.yaml\naxes:\n  b:\n    - {nme: a}\n", "unknown key 'axes.b[0].nme' in {path}; did you mean 'name'?"),
    ("base: base.yaml\nmetric: eval_los\n", "did you mean 'eval_loss'?"),
    ("base: base.yaml\nseeds: [0, 0]\n", "duplicates"),
    ("base: missing.yaml\n", "'base' in {path}: run config 'missing.yaml' not found"),
    ("base: base.yaml\naxes: {n: {model.norm: rmsnorm}}\n", "'axes.n.model.norm' in {path} must be a non-empty list"),
    ("base: base.yaml\naxes: {m: {model.mlp: [glu, mlp], model.intermediate_size: [1]}}\n", "different lengths"),
    ("base: base.yaml\nvariants: [{name: a}, {name: a}]\n", "same name: a"),
    ("base: base.yaml\nvariants: [{name: 'a/b'}]\n", "not filesystem-safe"),
    ("base: base.yaml\noverrides: {seed: 3}\n", "'overrides.seed' in {path}: seed is set by the sweep runner"),
])
def test_sweep_file_errors_name_the_key_and_the_file(tmp_path, body, message):
    path = write_sweep(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert message.format(path=path) in str(err.value)


def test_metric_override_is_checked_and_sets_the_direction(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, "base: base.yaml\n"))
    assert sweep.maximize is False
    assert with_metric(sweep, "eval_accuracy").maximize is True
    assert with_metric(sweep, "metrics/eval/Perplexity").maximize is False
    with pytest.raises(ConfigError, match="--metric: metric 'acc' is unknown"):
        with_metric(sweep, "acc")


def test_launch_command_has_base_overrides_and_runner_keys(tmp_path):
    path = write_sweep(tmp_path, """
        base: base.yaml
        command: "{python} -u my_train.py"
        variants: [{name: a, overrides: {model.norm: rmsnorm, tags: [x, y], export_hf: null}}]
        output: out
    """)
    sweep = load_sweep(path)
    argv = launch_argv(sweep, expand(sweep)[0])
    assert argv[1:3] == ["-u", "my_train.py"] and argv[3].endswith("base.yaml")  # base found next to the sweep file
    assert argv[4:] == [
        "model.norm=rmsnorm", 'tags=["x", "y"]', "export_hf=null",
        "run_name=a__seed=0", "seed=0", f"save_folder={os.path.join('out', 'runs', 'a__seed=0')}",
        "autoresume=true", "save_overwrite=false", "loggers.jsonl=metrics.jsonl",  # relative: inside save_folder
    ]


def test_script_has_one_self_contained_quoted_line_per_run(tmp_path):
    path = write_sweep(tmp_path, """
        base: base.yaml
        script_command: composer -n 8 train.py
        variants: [{name: a, overrides: {note: "it's a b"}}, {name: b}]
        seeds: [0, 1]
        output: out dir
    """)
    sweep = load_sweep(path)
    runs = expand(sweep)
    out = tmp_path / "runs.sh"
    write_script(sweep, runs, str(out))
    assert os.access(out, os.X_OK)
    lines = [ln for ln in out.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == len(runs) == 4
    for line, run in zip(lines, runs):
        tokens = shlex.split(line)
        train, touch = tokens[: tokens.index("&&")], tokens[tokens.index("&&") + 1:]
        assert train[:4] == ["composer", "-n", "8", "train.py"]
        assert train[5:] == launch_argv(sweep, run, script=True)[5:]
        assert f"save_folder={run.run_dir}" in train and f"run_name={run.name}" in train
        assert touch == ["touch", os.path.join(run.run_dir, "DONE")]
    assert "note=it's a b" in shlex.split(lines[0])


def test_shipped_blocks_sweep_is_one_factor_at_a_time_and_valid(monkeypatch):
    monkeypatch.chdir(REPO)  # the sweep's base path is written relative to the repository root
    sweep = load_sweep(os.path.join("yamls", "ablations", "blocks.yaml"))
    runs = [r for r in expand(sweep) if r.seed == sweep.spec.seeds[0]]
    assert [r.variant for r in runs] == ["baseline", "all_global", "rmsnorm", "swiglu", "gelu_mlp", "postnorm"]
    assert len(sweep.spec.seeds) >= 2  # the report shows a spread over seeds
    common = dict(runs[0].overrides)
    changed = {r.variant: {k: v for k, v in r.overrides if common.get(k, object()) != v} for r in runs[1:]}
    assert changed == {
        "all_global": {"model.global_attn_every_n_layers": 1},
        "rmsnorm": {"model.norm": "rmsnorm"},
        "swiglu": {"model.hidden_activation": "silu"},
        "gelu_mlp": {"model.mlp": "mlp", "model.intermediate_size": 384},
        "postnorm": {"model.layer_layout": "postnorm"},
    }
    validate_runs(sweep, runs)  # every variant is a valid FlexBERT run config


def test_validation_names_the_run_with_a_bad_override(tmp_path):
    path = write_sweep(tmp_path, f"""
        base: {DEMO}
        variants: [{{name: ok}}, {{name: typo, overrides: {{model.nrom: rmsnorm}}}}]
    """)
    sweep = load_sweep(path)
    with pytest.raises(ConfigError, match=r"run 'typo' of sweep .*unknown key 'model.nrom'.*did you mean 'norm'"):
        validate_runs(sweep, expand(sweep))


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(REPO, "yamls", "ablations")) if f.endswith(".yaml")))
def test_every_shipped_sweep_loads_and_its_runs_validate(name, monkeypatch):
    monkeypatch.chdir(REPO)
    sweep = load_sweep(os.path.join("yamls", "ablations", name))
    validate_runs(sweep, expand(sweep))
