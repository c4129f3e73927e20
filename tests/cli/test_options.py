"""The CLI's shared options (rvmatte.cli.options): the model options are declared once and
every subcommand that runs the model has them with the same default, help and choices; every
subcommand that writes a file takes -o/--output, every one that prints progress -q/--quiet;
every --help shows the defaults."""

from __future__ import annotations

import argparse

import pytest

from rvmatte import hardware
from rvmatte.cli import build_parser
from rvmatte.cli.options import MODEL_OPTIONS, HelpFormatter, spec_from_args
from rvmatte.errors import RvmatteError
from rvmatte.spec import BACKENDS, DTYPES, REFINERS, VARIANTS, ModelSpec

ALL = set(MODEL_OPTIONS)
# Subcommand -> the model options it must have (``export``: the network's identity and the
# device to trace on; ``live``: frame by frame, no chunks).
MODEL_RUNNING = {
    "convert": ALL | {"seq_chunk"},
    "demo": ALL | {"seq_chunk"},
    "diagnose": ALL | {"seq_chunk"},
    "benchmark run": ALL - {"backend"},  # its --backend is a list (below)
    "export": {"variant", "weights", "refiner", "device", "dtype"},
    "live": ALL,
    "serve": ALL,
}
# Documented per-subcommand defaults (their help says why): (subcommand, option).
OWN_DEFAULTS = {("export", "device"), ("export", "dtype"), ("benchmark run", "downsample")}

WRITES_FILES = {  # subcommand -> (required arguments besides the output, dest)
    "convert": (["in.mp4"], "output"),
    "demo": ([], "output"),
    "diagnose": (["in.mp4"], "output"),
    "export": ([], "output"),
    "live": (["--source", "0"], "output"),
    "benchmark make": ([], "output"),
    "benchmark run": (["bench"], "output"),
    "train": ([], "out"),
    "prepare-greenscreen": (["take1.mp4"], "output"),
}
OLD_SPELLINGS = [  # scripts written for the older options keep working
    (["demo", "--output-dir", "d"], "output", "d"),
    (["train", "--out", "runs/a"], "out", "runs/a"),
    (["export", "m.onnx"], "output_file", "m.onnx"),
    (["live", "--source", "0", "--output", "o.mp4"], "output", "o.mp4"),
    (["benchmark", "run", "bench", "-o", "r", "--backends", "torch"], "backends", "torch"),
]
PRINTS_PROGRESS = {
    "convert": ["in.mp4"], "demo": [], "diagnose": ["in.mp4"], "live": ["--source", "0"],
    "benchmark make": ["-o", "b"], "benchmark run": ["bench", "-o", "r"], "train": [],
    "prepare-greenscreen": ["take1.mp4", "-o", "d"],
}


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict:
    """Every subcommand parser, nested ones as ``"benchmark run"``."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix}{name}"
                out[full] = sub
                out.update(_subcommands(sub, full + " "))
    return out


@pytest.fixture(scope="module")
def parsers() -> dict:
    return _subcommands(build_parser())


def _parse(argv):
    return build_parser().parse_args(argv)


def _option(parser: argparse.ArgumentParser, dest: str):
    """The visible action that stores ``dest`` (hidden aliases left out)."""
    found = [a for a in parser._actions if a.dest == dest and a.option_strings
             and a.help is not argparse.SUPPRESS]
    return found[0] if found else None


def _model_options(parser) -> set:
    return {a.dest for a in parser._actions
            if a.dest in ALL | {"seq_chunk"} and a.option_strings}


def test_every_model_running_subcommand_has_its_model_options(parsers):
    for name, expected in MODEL_RUNNING.items():
        assert _model_options(parsers[name]) == expected, name


def test_model_options_are_identical_everywhere(parsers):
    ref = parsers["convert"]
    for name, expected in MODEL_RUNNING.items():
        for dest in expected:
            a, r = _option(parsers[name], dest), _option(ref, dest)
            assert a.option_strings == r.option_strings, (name, dest)
            assert a.choices == r.choices and a.type == r.type and a.metavar == r.metavar, \
                (name, dest)
            if (name, dest) in OWN_DEFAULTS:  # a documented difference, said in its help
                assert a.default != r.default, (name, dest)
                assert "unlike the other subcommands" in a.help or "default here" in a.help, \
                    (name, dest)
            else:
                assert a.default == r.default and a.help == r.help, (name, dest)
    assert _option(ref, "backend").choices == BACKENDS
    assert _option(ref, "variant").choices == VARIANTS
    assert _option(ref, "refiner").choices == REFINERS
    assert all(d in _option(ref, "dtype").metavar for d in DTYPES)
    assert {_option(parsers[n], "device").default for n in MODEL_RUNNING if n != "export"} \
        == {"auto"}
    # `benchmark run` compares several backends: there --backend takes a comma-separated list
    listed = _option(parsers["benchmark run"], "backends")
    assert "--backend" in listed.option_strings and "comma-separated" in listed.help


def test_every_file_writing_subcommand_takes_dash_o_output(parsers):
    for name, (args, dest) in WRITES_FILES.items():
        words = name.split()
        short = _parse([*words, *args, "-o", "x1"])
        long = _parse([*words, *args, "--output", "x2"])
        assert getattr(short, dest) == "x1" and getattr(long, dest) == "x2", name
    for argv, dest, value in OLD_SPELLINGS:
        assert getattr(_parse(argv), dest) == value, argv
    for old in ("--output-dir", "--out"):  # accepted, not advertised
        for name in ("demo", "train"):
            assert old + " " not in parsers[name].format_help()


def test_every_progress_printing_subcommand_takes_dash_q(parsers):
    for name, args in PRINTS_PROGRESS.items():
        words = name.split()
        assert _parse([*words, *args, "-q"]).quiet is True, name
        assert _parse([*words, *args, "--quiet"]).quiet is True, name
        assert _parse([*words, *args]).quiet is False, name


def test_every_help_shows_defaults_and_choices(parsers):
    for name, p in parsers.items():
        assert p.formatter_class is HelpFormatter, name
        text = " ".join(p.format_help().split())
        for a in p._actions:
            if (a.help is argparse.SUPPRESS or a.default in (None, argparse.SUPPRESS)
                    or a.nargs == 0 or not a.option_strings):
                continue
            assert f"(default: {a.default})" in text, (name, a.option_strings)
            if a.choices:
                assert "{" + ",".join(map(str, a.choices)) + "}" in text, (name, a.dest)
    convert = " ".join(parsers["convert"].format_help().split())
    assert "(default: auto)" in convert and "--strict" in convert


def test_spec_from_args_equals_the_expected_spec():
    argv = ["--variant", "resnet50", "--weights", "none", "--refiner", "fast_guided_filter",
            "--device", "cpu", "--dtype", "float16", "--backend", "torch", "--downsample", "0.25",
            "--threads", "1"]
    want = ModelSpec(variant="resnet50", weights=None, refiner="fast_guided_filter",
                     device="cpu", dtype="float16", backend="torch", downsample=0.25, threads=1)
    for cmd in (["convert", "in.mp4"], ["demo"], ["diagnose", "in.mp4"], ["live", "--source", "0"]):
        assert spec_from_args(_parse([*cmd, *argv])) == want, cmd
    assert hardware.default_threads() == 1  # --threads applied
    assert spec_from_args(_parse(["serve", "--backend", "onnxruntime", "--dtype", "fp16"])) \
        == ModelSpec(backend="onnxruntime", dtype="float16")
    # the defaults are ModelSpec's defaults
    assert spec_from_args(_parse(["convert", "in.mp4"])) == ModelSpec()
    assert spec_from_args(_parse(["benchmark", "run", "b", "-o", "r"])) == ModelSpec()
    assert spec_from_args(_parse(["export", "-o", "m.onnx"])) == ModelSpec(device="cpu",
                                                                           dtype="float32")


@pytest.mark.parametrize("argv, needle", [
    (["--dtype", "int8"], "unknown dtype"),
    (["--downsample", "2"], "invalid downsample ratio"),
    (["--threads", "0"], "threads must be at least 1"),
])
def test_bad_model_option_is_an_rvmatte_error(argv, needle):
    with pytest.raises(RvmatteError, match=needle):
        spec_from_args(_parse(["convert", "in.mp4", *argv]))


def test_bad_model_option_is_one_line_on_the_cli(capsys):
    from rvmatte.cli import main

    assert main(["diagnose", "in.mp4", "--dtype", "int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rvmatte: error: unknown dtype")
