"""config.yaml mirrors the settings dataclasses exactly, every key carries EN and RU comments, and the precedence
defaults < config.yaml < command line holds."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from ftg import config as settings
from ftg.errors import UserError

SHIPPED = settings.PROJECT_ROOT / "config.yaml"


def test_shipped_config_has_exactly_the_dataclass_keys_and_defaults():
    shipped = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    assert set(shipped) == set(settings.SECTIONS)
    for section, cls in settings.SECTIONS.items():
        defaults = cls()
        assert set(shipped[section]) == {f.name for f in dataclasses.fields(cls)}, section
        for key, value in shipped[section].items():
            default = getattr(defaults, key)
            if isinstance(default, Path):
                default = default.as_posix()
            assert value == default, f"config.yaml {section}.{key} = {value!r}, dataclass default = {default!r}"


def test_every_key_has_english_and_russian_comments_and_a_docstring():
    lines = SHIPPED.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^  [a-z_]+:", line):
            comments = []
            back = number - 1
            while back >= 0 and lines[back].strip().startswith("#"):
                comments.append(lines[back])
                back -= 1
            text = " ".join(comments)
            assert "EN:" in text and "RU:" in text, f"config.yaml line {number + 1} lacks EN/RU comments: {line}"
            assert re.search("[а-яА-Я]", text), f"the RU comment above '{line.strip()}' has no Russian"
    for cls in settings.SECTIONS.values():
        docs = settings.field_docs(cls)
        for f in dataclasses.fields(cls):
            assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"


def test_unknown_key_is_an_error_that_names_it(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("train:\n  seeed: 1\n", encoding="utf-8")
    with pytest.raises(UserError, match="train.seeed"):
        settings.load_config(bad)
    bad.write_text("trainn:\n  seed: 1\n", encoding="utf-8")
    with pytest.raises(UserError, match="trainn"):
        settings.load_config(bad)


def test_wrong_type_is_an_error(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("train:\n  seed: many\n", encoding="utf-8")
    with pytest.raises(UserError, match="train.seed"):
        settings.load_config(bad)


def test_precedence_defaults_then_yaml_then_command_line(tmp_path, monkeypatch):
    own = tmp_path / "config.yaml"
    own.write_text("train:\n  seed: 7\ndata:\n  me: [Алиса]\n  mode: conversational\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    settings.add_config_arguments(parser, ["paths", "data", "train"])
    cfg = settings.config_from_args(parser.parse_args(["--config", str(own)]))
    assert cfg.train.seed == 7 and cfg.data.me == ["Алиса"] and cfg.data.mode == "conversational"
    assert cfg.data.format == "auto"  # untouched default
    monkeypatch.chdir(tmp_path)
    args = parser.parse_args(
        ["--config", str(own), "--seed", "9", "--me", "Bob", "--me", "12345", "--data-dir", "мои данные"]
    )
    cfg = settings.config_from_args(args)
    assert cfg.train.seed == 9
    assert cfg.data.me == ["Bob", "12345"]
    assert cfg.paths.data_dir == tmp_path / "мои данные"  # command-line paths are relative to the current folder
    assert cfg.paths.output_dir == settings.PROJECT_ROOT / "output"  # config paths: relative to the project
