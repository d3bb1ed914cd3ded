"""LR schedules: the curve at known points, in tok, ba and dur, with and without a Composer State."""
import math

import pytest
import torch
from composer.core import State, Timestamp
from composer.devices import DeviceCPU

from flexbert.config.optim import SchedulerConfig, parse_time
from flexbert.config.strict import ConfigError, decode
from flexbert.train.schedulers import (SCHEDULES, Clock, ConfigScheduler, ConstantWithWarmupScheduler,
                                       CosineWithWarmupScheduler, OneMinusSqrtScheduler, WarmupStableDecayScheduler,
                                       build_scheduler, check_schedule_config, lr_multiplier_at, schedule_class)


def wsd(unit, shape="linear", **kw):
    """Warmup 100, decay over the last 200 of a 1000-long run, final multiplier 0.1."""
    return SchedulerConfig("warmup_stable_decay", t_warmup=f"100{unit}", t_decay=f"200{unit}", decay_shape=shape,
                           alpha_f=0.1, **kw)


# (t, expected) for warmup 100 / decay 800..1000 / alpha_f 0.1
LINEAR_POINTS = [(0, 0.0), (50, 0.5), (100, 1.0), (450, 1.0), (800, 1.0), (900, 0.1 + 0.9 * 0.5), (1000, 0.1)]
# 1 - sqrt: a quarter of the decay done (t=850) leaves half the range: 0.1 + 0.9 * (1 - 0.5)
SQRT_POINTS = [(0, 0.0), (100, 1.0), (800, 1.0), (850, 0.55), (900, 0.1 + 0.9 * (1 - math.sqrt(0.5))), (1000, 0.1)]


@pytest.mark.parametrize("unit", ["tok", "ba", "sp"])
@pytest.mark.parametrize("shape,points", [("linear", LINEAR_POINTS), ("one_minus_sqrt", SQRT_POINTS)])
def test_warmup_stable_decay_curve(unit, shape, points):
    cfg = wsd(unit, shape)
    for t, expected in points:
        assert lr_multiplier_at(cfg, f"{t}{unit}", f"1000{unit}") == pytest.approx(expected, abs=1e-12), t


def test_dur_times_follow_max_duration_unit():
    cfg = SchedulerConfig("warmup_stable_decay", t_warmup="0.1dur", t_decay="0.2dur", decay_shape="linear", alpha_f=0.1)
    for t, expected in LINEAR_POINTS:
        assert lr_multiplier_at(cfg, f"{t}ba", "1000ba") == pytest.approx(expected), t
        assert lr_multiplier_at(cfg, f"{t / 1000}dur", "1000ba") == pytest.approx(expected), t


def test_mixed_tok_warmup_with_dur_decay():
    cfg = SchedulerConfig("warmup_stable_decay", t_warmup="100tok", t_decay="0.2dur", decay_shape="linear", alpha_f=0.1)
    for t, expected in LINEAR_POINTS:
        assert lr_multiplier_at(cfg, f"{t}tok", "1000tok") == pytest.approx(expected), t


def test_alpha_i_starts_warmup_above_zero():
    cfg = SchedulerConfig("constant_with_warmup", t_warmup="100ba", alpha_i=0.2)
    assert lr_multiplier_at(cfg, "0ba", "10000ba") == pytest.approx(0.2)
    assert lr_multiplier_at(cfg, "50ba", "10000ba") == pytest.approx(0.6)
    assert lr_multiplier_at(cfg, "9999ba", "10000ba") == 1.0


def test_default_wsd_is_modernbert_pretraining_no_decay():
    cfg = SchedulerConfig()  # 3B-token warmup, no decay
    assert cfg.t_decay is None and schedule_class(cfg).t_decay(cfg) == (0.0, "tok")
    assert lr_multiplier_at(cfg, "1500000000tok", "1719000000000tok") == pytest.approx(0.5)
    assert lr_multiplier_at(cfg, "1719000000000tok", "1719000000000tok") == 1.0


def test_one_minus_sqrt_defaults_to_decay_over_whole_run():
    cfg = SchedulerConfig("one_minus_sqrt", t_warmup="0tok", alpha_f=0.001)
    assert schedule_class(cfg).t_decay(cfg) == (1.0, "dur")
    assert lr_multiplier_at(cfg, "0ba", "400ba") == 1.0
    assert lr_multiplier_at(cfg, "100ba", "400ba") == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_multiplier_at(cfg, "400ba", "400ba") == pytest.approx(0.001)


def test_cosine_with_warmup():
    cfg = SchedulerConfig("cosine", t_warmup="100ba", alpha_f=0.0)
    assert lr_multiplier_at(cfg, "50ba", "1100ba") == pytest.approx(0.5)
    assert lr_multiplier_at(cfg, "100ba", "1100ba") == pytest.approx(1.0)
    assert lr_multiplier_at(cfg, "350ba", "1100ba") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_multiplier_at(cfg, "600ba", "1100ba") == pytest.approx(0.5)
    assert lr_multiplier_at(cfg, "1100ba", "1100ba") == pytest.approx(0.0, abs=1e-12)


def test_unconvertible_units_are_errors_naming_the_key():
    with pytest.raises(ValueError, match=r"t_decay is in 'tok' but max_duration is in 'ba'"):
        lr_multiplier_at(SchedulerConfig(t_warmup="10ba", t_decay="200tok"), "0ba", "1000ba")
    with pytest.raises(ValueError, match=r"t_warmup is in 'tok' but t is in 'ba'"):
        lr_multiplier_at(SchedulerConfig(t_warmup="100tok"), "5ba", "1000ba")
    with pytest.raises(ValueError, match=r"t_warmup is in 'tok' but max_duration is in 'ba'"):
        lr_multiplier_at(SchedulerConfig("cosine", t_warmup="100tok"), "5ba", "1000ba")
    with pytest.raises(ValueError, match="exceed max_duration"):
        lr_multiplier_at(wsd("ba"), "0ba", "250ba")


def test_config_validation_messages():
    with pytest.raises(ConfigError, match=r"scheduler.t_warmup = '3Btok' is not a time string"):
        decode(SchedulerConfig, {"t_warmup": "3Btok"})
    with pytest.raises(ConfigError, match=r"unit 'ep'.*epochs"):
        decode(SchedulerConfig, {"t_decay": "1ep"})
    # what a schedule requires of the keys is checked by the schedule (preflight, dry-run, build_scheduler)
    with pytest.raises(ConfigError, match="contradicts name: one_minus_sqrt"):
        check_schedule_config(decode(SchedulerConfig, {"name": "one_minus_sqrt", "decay_shape": "linear"}))
    with pytest.raises(ConfigError, match="not used by 'cosine'"):
        build_scheduler(decode(SchedulerConfig, {"name": "cosine", "t_decay": "0.1dur"}))
    with pytest.raises(ConfigError, match=r"unknown LR schedule 'cosin' at scheduler.name.*did you mean 'cosine'"):
        check_schedule_config(decode(SchedulerConfig, {"name": "cosin"}))
    with pytest.raises(ConfigError, match="exceed the whole run"):
        decode(SchedulerConfig, {"t_warmup": "0.6dur", "t_decay": "0.5dur"})
    with pytest.raises(ConfigError, match="alpha_f"):
        decode(SchedulerConfig, {"alpha_f": 2.0})
    assert parse_time("3e9tok") == (3e9, "tok")
    assert parse_time("3_000_000_000tok") == (3e9, "tok")


def make_state(max_duration, **timestamp):
    state = State(model=torch.nn.Linear(2, 2), rank_zero_seed=0, run_name="t", device=DeviceCPU(),
                  max_duration=max_duration)
    state.timestamp = Timestamp(**timestamp)
    return state


def test_composer_scheduler_reads_tokens_not_batches():
    # Batch-size warmup: 3 small batches have carried 50 tokens; the token warmup is half done
    # whatever the batch count.
    sched = WarmupStableDecayScheduler(t_warmup="100tok", t_decay="0.2dur", decay_shape="linear", alpha_f=0.1)
    assert sched(make_state("1000tok", token=50, batch=3)) == pytest.approx(0.5)
    assert sched(make_state("1000tok", token=50, batch=40)) == pytest.approx(0.5)
    assert sched(make_state("1000tok", token=900, batch=41)) == pytest.approx(0.55)


def test_composer_scheduler_mixes_tok_warmup_with_batch_duration():
    # Warmup in tokens, run length and decay in batches: each phase reads its own unit.
    sched = WarmupStableDecayScheduler(t_warmup="100tok", t_decay="20ba", decay_shape="linear")
    assert sched(make_state("100ba", token=25, batch=1)) == pytest.approx(0.25)
    assert sched(make_state("100ba", token=5000, batch=50)) == 1.0
    assert sched(make_state("100ba", token=9000, batch=90)) == pytest.approx(0.5)


def test_composer_scheduler_ssr_scales_absolute_times():
    sched = ConstantWithWarmupScheduler(t_warmup="100ba")
    assert sched(make_state("1000ba", batch=50), ssr=0.5) == pytest.approx(1.0)
    assert sched(make_state("1000ba", batch=25), ssr=0.5) == pytest.approx(0.5)


def test_build_scheduler_classes_and_values():
    assert isinstance(build_scheduler(SchedulerConfig()), WarmupStableDecayScheduler)
    assert isinstance(build_scheduler(SchedulerConfig("cosine", t_warmup="1ba")), CosineWithWarmupScheduler)
    one = build_scheduler(SchedulerConfig("one_minus_sqrt", t_warmup="0tok"))
    assert isinstance(one, OneMinusSqrtScheduler)
    assert one(make_state("400ba", batch=100)) == pytest.approx(0.5)
    assert OneMinusSqrtScheduler()(make_state("400ba", batch=100)) == pytest.approx(0.5)


def test_in_composer_trainer_lr_follows_tokens():
    """A token warmup in a real Trainer whose batches carry different token counts.

    Composer steps schedulers at BATCH_END before advancing the timestamp, so batch k runs with
    the multiplier at the tokens seen before batch k-1 (batch 0 and 1: at 0 tokens).
    """
    from composer import Trainer
    from composer.core import Callback, DataSpec
    from composer.models import ComposerClassifier

    class Record(Callback):
        def __init__(self):
            self.rows = []

        def batch_start(self, state, logger):
            self.rows.append((state.timestamp.token.value, state.optimizers[0].param_groups[0]["lr"]))

    torch.manual_seed(0)
    sizes = [2, 4, 6, 8, 8]  # batch-size warmup: rows per batch grow; 3 tokens per row
    batches = [(torch.randn(n, 4), torch.randint(0, 2, (n,))) for n in sizes]
    spec = DataSpec(batches, get_num_tokens_in_batch=lambda b: 3 * len(b[0]), get_num_samples_in_batch=lambda b: len(b[0]),
                    split_batch=lambda b, n: [b])
    model = ComposerClassifier(torch.nn.Linear(4, 2), num_classes=2)
    cfg = SchedulerConfig("constant_with_warmup", t_warmup="60tok")
    rec = Record()
    Trainer(model=model, train_dataloader=spec, max_duration="84tok", optimizers=torch.optim.SGD(model.parameters(), lr=0.5),
            schedulers=build_scheduler(cfg), callbacks=[rec], device="cpu", progress_bar=False, log_to_console=False,
            device_train_microbatch_size=8).fit()
    tokens = [t for t, _ in rec.rows]
    assert tokens == [0, 6, 18, 36, 60]
    expected = [0.0] + [0.5 * lr_multiplier_at(cfg, f"{t}tok", "84tok") for t in tokens[:-1]]
    assert [lr for _, lr in rec.rows] == pytest.approx(expected)


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_registered_schedule_is_a_composer_scheduler_in_the_unit_interval(name):
    """The contract of a schedule, for every registered one: built by name, a multiplier in [0, 1]."""
    cfg = SchedulerConfig(name, t_warmup="10ba", t_decay="0.5dur", alpha_i=0.1, alpha_f=0.05)
    try:
        check_schedule_config(cfg)
    except ConfigError:  # a schedule without a decay phase refuses t_decay
        cfg = SchedulerConfig(name, t_warmup="10ba", alpha_i=0.1, alpha_f=0.05)
    scheduler = build_scheduler(cfg)
    assert isinstance(scheduler, ConfigScheduler) and type(scheduler) is SCHEDULES.get(name)
    values = [lr_multiplier_at(cfg, f"{t}ba", "100ba") for t in range(0, 101, 5)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values[0] == pytest.approx(0.1)  # alpha_i at step 0: every shipped schedule warms up
    assert scheduler(make_state("100ba", batch=50)) == pytest.approx(lr_multiplier_at(cfg, "50ba", "100ba"))


def test_a_new_schedule_is_one_registered_class(monkeypatch):
    """A schedule added in one place (here, in this test) is found by name in the config, preflight and Composer."""

    class StepDown(ConfigScheduler):
        name = "step_down"

        @classmethod
        def multiplier(cls, cfg, clock: Clock) -> float:
            return 1.0 if clock.now(clock.max_unit, "t_warmup") < clock.max_value / 2 else 0.1

    monkeypatch.setitem(SCHEDULES._items, "step_down", StepDown)
    cfg = decode(SchedulerConfig, {"name": "step_down"})
    assert lr_multiplier_at(cfg, "10ba", "100ba") == 1.0 and lr_multiplier_at(cfg, "60ba", "100ba") == 0.1
    assert build_scheduler(cfg)(make_state("100ba", batch=70)) == 0.1
