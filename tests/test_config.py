"""Configuration: layering, strict keys, types, presets and schedule scaling."""

import pytest

from nasbench.config import parse_dotlist, resolve_search_config, to_yaml
from nasbench.errors import ConfigError, NasError


def test_darts_paper_defaults():
    cfg = resolve_search_config("darts")
    assert (cfg.epochs, cfg.batch_size, cfg.model.channels, cfg.model.layers) == (50, 64, 16, 8)
    assert (cfg.optim.lr, cfg.optim.lr_min, cfg.optim.momentum, cfg.optim.weight_decay) == (0.025, 0.001, 0.9, 3e-4)
    assert cfg.optim.grad_clip == 5.0
    assert (cfg.arch_optim.lr, list(cfg.arch_optim.betas), cfg.arch_optim.weight_decay) == (3e-4, [0.5, 0.999], 1e-3)
    assert cfg.data.train_portion == 0.5 and cfg.darts.unrolled is False


def test_layering_file_then_key_value_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 7\nbatch_size: 12\noptim:\n  lr: 0.5\n")
    cfg = resolve_search_config("darts", config_file=f, overrides=["batch_size=13", "darts.unrolled=true"],
                                shortcuts={"batch_size": 14})
    assert cfg.epochs == 7 and cfg.optim.lr == 0.5 and cfg.batch_size == 14 and cfg.darts.unrolled is True


def test_unknown_key_names_the_valid_keys():
    with pytest.raises(ConfigError) as e:
        resolve_search_config("darts", overrides=["optim.lrr=0.1"])
    msg = str(e.value)
    assert "optim.lrr" in msg and "optim.lr" in msg and "valid keys" in msg


def test_other_algorithms_sections_are_not_accepted():
    with pytest.raises(ConfigError):
        resolve_search_config("darts", overrides=["not_an_algo.k=3"])


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError) as e:
        resolve_search_config("darts", overrides=["epochs=abc"])
    assert "epochs" in str(e.value)


def test_unknown_file_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  chanels: 8\n")
    with pytest.raises(ConfigError) as e:
        resolve_search_config("darts", config_file=f)
    assert "model.chanels" in str(e.value) and "model.channels" in str(e.value)


def test_unknown_preset_algo_and_dataset():
    with pytest.raises(ConfigError):
        resolve_search_config("darts", preset="fast")
    with pytest.raises(NasError):
        resolve_search_config("nope")
    with pytest.raises(NasError):
        resolve_search_config("darts", overrides=["data.dataset=imagenette"])


@pytest.mark.parametrize("override", ["model.layers=0", "epochs=0", "batch_size=0", "model.channels=7",
                                      "data.train_portion=1.0", "device=tpu"])
def test_sizes_that_cannot_work(override):
    with pytest.raises(ConfigError):
        resolve_search_config("darts", overrides=[override])


def test_quick_preset_is_small_and_overridable():
    cfg = resolve_search_config("darts", preset="quick", shortcuts={"epochs": 3})
    assert cfg.preset == "quick" and cfg.epochs == 3 and cfg.model.channels <= 8 and cfg.data.subset


def test_parse_dotlist_types():
    assert parse_dotlist(["a=1", "b=0.5", "c=true", "d=x", "e=[1, 2]", "f="]) == {
        "a": 1, "b": 0.5, "c": True, "d": "x", "e": [1, 2], "f": None}
    with pytest.raises(ConfigError):
        parse_dotlist(["novalue"])


def test_schedule_scaling():
    from nasbench.algorithms.base import create_strategy

    cfg = resolve_search_config("darts", shortcuts={"epochs": 10})
    s = create_strategy("darts", cfg)
    assert s.scaled(15) == 3  # 15 of the paper's 50 epochs → 3 of 10
    cfg = resolve_search_config("darts", overrides=["scale_schedules=false"], shortcuts={"epochs": 10})
    assert create_strategy("darts", cfg).scaled(15) == 15


def test_resolved_config_round_trips_through_yaml(tmp_path):
    from nasbench.config import load_run_config

    cfg = resolve_search_config("darts", overrides=["darts.unrolled=true"])
    p = tmp_path / "config.yaml"
    p.write_text(to_yaml(cfg))
    assert load_run_config(p) == cfg
