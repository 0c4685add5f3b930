"""The typed config: defaults, checks and suggestions in one place; YAML files hold only what differs."""
import dataclasses
import importlib.resources

import pytest
import yaml

from captioner import config
from captioner.config import __main__ as config_cli
from captioner.config import sections


def _yaml(name: str) -> dict:
    return yaml.safe_load(importlib.resources.files("configs").joinpath(name + ".yaml").read_text())


@pytest.mark.parametrize("name", config.shipped_configs())
def test_shipped_configs_hold_only_what_differs_from_the_defaults_with_a_comment_each(name):
    text = importlib.resources.files("configs").joinpath(name + ".yaml").read_text()
    defaults = config.Config().to_dict()
    for section, values in _yaml(name).items():
        for key, value in values.items():
            assert value != defaults[section][key], f"{name}.yaml repeats the default {section}.{key}={value!r}"
    key_lines = [line for line in text.splitlines() if line.startswith("  ") and ":" in line]
    assert key_lines and all("#" in line for line in key_lines), f"{name}.yaml has keys without a comment"
    loaded = config.load(name)
    assert loaded.to_dict() == config.from_mapping(_yaml(name), name).to_dict()


def test_every_key_has_a_doc_and_a_default_that_passes_its_own_check():
    for cls in sections.SECTIONS.values():
        for field in dataclasses.fields(cls):
            assert field.metadata["rule"].doc, f"{cls.__name__}.{field.name} has no doc"
        cls()  # raises if a default broke its own rule
    assert len(config.known_keys()) == len(set(config.known_keys())) > 25


@pytest.mark.parametrize("override, expected", [
    ("train.epoch=3", "unknown key train.epoch; did you mean train.epochs?"),
    ("trian.epochs=3", "unknown key trian.epochs; did you mean train.epochs?"),
    ("extract.beam_size=2", "did you mean caption.beam_size?"),
    ("epochs=3", "not of the form section.key=value; did you mean train.epochs=3?"),
    ("train.epochs", "not of the form section.key=value"),
])
def test_unknown_or_misspelled_overrides_suggest_the_closest_key(override, expected):
    with pytest.raises(config.ConfigError, match="") as error:
        config.load("local", [override])
    assert expected in str(error.value)


@pytest.mark.parametrize("override, allowed", [
    ("train.epochs=-1", "train.epochs must be an integer >= 1"),
    ("train.epochs=0", "train.epochs must be an integer >= 1"),
    ("train.batch_size=0", "train.batch_size must be an integer >= 1"),
    ("caption.beam_size=-2", "caption.beam_size must be an integer >= 1"),
    ("caption.beam_size=2.5", "caption.beam_size must be an integer >= 1"),
    ("caption.max_length=0", "caption.max_length must be an integer >= 1"),
    ("train.lr_schedule=cos", "train.lr_schedule must be one of constant, cosine"),
    ("train.decoder=transformerr", "train.decoder must be one of merge, init_lstm, attention"),
    ("train.dropout=1", "train.dropout must be a number >= 0 and < 1"),
    ("train.learning_rate=0", "train.learning_rate must be a number > 0"),
    ("train.self_critical_samples=1", "train.self_critical_samples must be an integer >= 2"),
    ("extract.spatial=maybe", "extract.spatial must be true or false"),
    ("extract.num_shards=true", "extract.num_shards must be an integer >= 0"),
    ("train.learning_rate=.nan", "train.learning_rate must be a finite number"),
    ("caption.length_penalty=.inf", "caption.length_penalty must be a finite number"),
    ("train.encoder_learning_rate=-.inf", "train.encoder_learning_rate must be a finite number"),
])
def test_bad_values_name_the_key_the_value_and_what_is_allowed(override, allowed):
    key, _, value = override.partition("=")
    with pytest.raises(config.ConfigError) as error:
        config.load("local", [override])
    message = str(error.value)
    assert allowed in message and f"{key}={yaml.safe_load(value)!r}" in message


def test_a_file_with_an_unknown_key_or_section_or_a_bad_value_is_refused(tmp_path):
    cases = {
        "extract:\n  encoder: thumbnail\ntrain:\n  epohcs: 3\n": "unknown key train.epohcs; did you mean train.epochs?",
        "trainn:\n  epochs: 3\n": "unknown section 'trainn'; did you mean train?",
        "train:\n  epochs: many\n": "train.epochs='many' is not allowed",
        "train: 3\n": "section 'train' must map keys to values",
        "- a list\n": "a config is a mapping of sections",
        "train:\n  epochs: [1\n": "is not valid YAML",
    }
    for number, (text, expected) in enumerate(cases.items()):
        path = tmp_path / f"bad{number}.yaml"
        path.write_text(text)
        with pytest.raises(config.ConfigError) as error:
            config.load(str(path))
        assert expected in str(error.value) and str(path) in str(error.value), (text, str(error.value))
    with pytest.raises(config.ConfigError, match="neither a file nor a shipped config.*did you mean flickr8k"):
        config.load("flickr8")


def test_types_are_normalised_and_overrides_apply_in_order(tmp_path):
    loaded = config.load("local", ["train.warmup_epochs=2", "train.epochs=4", "train.epochs=5",
                                   "extract.spatial=false", "caption.length_penalty=1",
                                   "train.self_critical_learning_rate=5e-05", "train.learning_rate=1E-3"])
    assert loaded.train.self_critical_learning_rate == 5e-05 and loaded.train.learning_rate == 0.001
    assert loaded.train.warmup_epochs == 2.0 and isinstance(loaded.train.warmup_epochs, float)
    assert loaded.train.epochs == 5 and loaded.extract.spatial is False and loaded.caption.length_penalty == 1.0
    assert loaded.train.units == 128  # from local.yaml, untouched
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing but a comment\n")
    assert config.load(str(empty)) == config.Config()


def test_sections_check_themselves_however_they_are_made():
    with pytest.raises(config.ConfigError, match="train.units=0 is not allowed"):
        config.TrainConfig(units=0)
    with pytest.raises(config.ConfigError, match="extract.spatial=1 is not allowed"):
        config.ExtractConfig(spatial=1)
    changed = config.Config().with_values("a test", train={"epochs": 2})
    assert changed.train.epochs == 2 and config.Config().train.epochs == 15
    with pytest.raises(config.ConfigError, match="a test: train.epochs=-3"):
        config.Config().with_values("a test", train={"epochs": -3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.train.epochs = 3


def test_the_config_command_lists_every_key_with_its_doc(capsys):
    assert config_cli.main(["--config", "flickr8k", "--set", "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    for key in config.known_keys():
        section, name = key.split(".")
        assert f"  {name}: " in out, key
    assert "epochs: 2   (default 15)" in out and "cross-entropy epochs" in out
    assert config_cli.main(["--set", "train.nope=1"]) == 2
    assert "unknown key train.nope" in capsys.readouterr().err
