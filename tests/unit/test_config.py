"""The operator's settings (`feldera-operator run` flags and their environment variables): a
value that makes no sense is refused at start with a message that names the flag and the
variable, never accepted and acted on (a period of 0 would spin, a negative one crash later)."""

from __future__ import annotations

import argparse

import pytest

from feldera_operator import runner
from feldera_operator.config import OperatorConfig


def parse(argv: list[str]) -> OperatorConfig:
    parser = argparse.ArgumentParser(exit_on_error=False)
    runner.add_arguments(parser)
    return runner.config_from_args(parser.parse_args(argv))


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--period", "0"),
        ("--period", "-1"),
        ("--period", "nan"),
        ("--period", "inf"),
        ("--period", "86401"),
        ("--period", "ten"),
        ("--request-timeout", "0"),
        ("--request-timeout", "-5"),
        ("--kube-request-timeout", "0"),
        ("--external-stop-grace", "-1"),
        ("--external-stop-grace", "1e9"),
        ("--leader-election-lease-duration", "1"),
    ],
)
def test_a_flag_out_of_range_is_refused_naming_the_flag(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises((SystemExit, argparse.ArgumentError)) as info:
        parse([flag, value])
    text = str(info.value) + capsys.readouterr().err
    assert flag in text


@pytest.mark.parametrize(
    ("variable", "flag"),
    [
        ("FELDERA_OPERATOR_PERIOD", "--period"),
        ("FELDERA_REQUEST_TIMEOUT", "--request-timeout"),
        ("FELDERA_EXTERNAL_STOP_GRACE", "--external-stop-grace"),
    ],
)
def test_an_environment_variable_out_of_range_is_refused_naming_it(
    variable: str, flag: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, "-1")
    with pytest.raises((SystemExit, argparse.ArgumentError)) as info:
        parse([])
    text = str(info.value) + capsys.readouterr().err
    assert variable in text and flag in text


def test_sane_values_are_taken() -> None:
    config = parse(["--period", "2.5", "--request-timeout", "3", "--external-stop-grace", "0"])
    assert (config.period, config.request_timeout, config.external_stop_grace) == (2.5, 3.0, 0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"period": 0},
        {"period": -1.0},
        {"period": float("nan")},
        {"request_timeout": 0},
        {"kube_request_timeout": -1},
        {"external_stop_grace": -1},
        {"concurrency": 0},
    ],
)
def test_the_config_itself_refuses_what_the_flags_refuse(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        OperatorConfig(**kwargs)  # type: ignore[arg-type]
