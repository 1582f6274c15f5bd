import pytest

from selfsup.config import ConfigError, load_config
from selfsup.train.config import parse_duration
from selfsup.train.schedule import warmup_cosine


def test_defaults_and_overrides():
    cfg = load_config(overrides=["train.lr=0.01", "method.mask_ratio=0.6", "encoder.size=small", "data.path=x/"])
    assert cfg.train.lr == 0.01 and cfg.method["mask_ratio"] == 0.6 and cfg.encoder.size == "small"
    assert cfg.train.epochs == 1 and cfg.method_name == "mae" and cfg.data.path == "x/"


def test_yaml_file(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("method: {name: mae, mask_ratio: 0.5}\ntrain: {steps: 10, batch_size: 8}\n")
    cfg = load_config(p, ["train.batch_size=4"])
    assert cfg.method["mask_ratio"] == 0.5 and cfg.train.steps == 10 and cfg.train.batch_size == 4


@pytest.mark.parametrize("override,message", [
    ("train.lrr=1", "unknown config key 'train.lrr'; did you mean 'train.lr'?"),
    ("method.mask_ration=0.5", "did you mean 'method.mask_ratio'?"),
    ("trian.lr=3", "did you mean 'train.lr'?"),
    ("train.budget=10x", "cannot read duration '10x'"),
    ("encoder.pool=foo", "bad value for 'encoder.pool'"),
    ("method=nosuch", "unknown method 'nosuch'"),
    ("train.lr", "not of the form key=value"),
])
def test_errors_are_one_line_and_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {budget: 2m, steps: 3}\n")
    with pytest.raises(ConfigError, match="one of epochs, steps or budget"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train: {bach_size: 3}\n")
    with pytest.raises(ConfigError, match="did you mean 'train.batch_size'"):
        load_config(unknown)


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("10m") == 600 and parse_duration("1h30m") == 5400
    assert parse_duration("2.5m") == 150 and parse_duration("45") == 45
    with pytest.raises(ValueError):
        parse_duration("ten minutes")


def test_warmup_cosine():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)
