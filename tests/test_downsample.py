import pytest

from rvmatte.errors import InputError
from rvmatte.downsample import (auto_downsample_ratio, parse_downsample_ratio,
                                          resolve_downsample_ratio)


def test_auto_rule_matches_official():
    assert auto_downsample_ratio(1080, 1920) == pytest.approx(512 / 1920)
    assert auto_downsample_ratio(2160, 3840) == pytest.approx(512 / 3840)
    assert auto_downsample_ratio(1280, 720) == pytest.approx(0.4)
    assert auto_downsample_ratio(288, 512) == 1.0
    assert auto_downsample_ratio(48, 64) == 1.0


@pytest.mark.parametrize("value,expected", [("auto", None), (None, None), ("0.25", 0.25),
                                            (0.5, 0.5), (1, 1.0), (" AUTO ", None)])
def test_parse_valid(value, expected):
    assert parse_downsample_ratio(value) == expected


@pytest.mark.parametrize("value", ["0", "-0.5", "1.5", "abc", "nan", "inf", 0, 2.0, True, ""])
def test_parse_invalid_ratio_is_a_clear_error(value):
    with pytest.raises(InputError, match="downsample ratio"):
        parse_downsample_ratio(value)


def test_resolve():
    assert resolve_downsample_ratio("auto", 720, 1280) == pytest.approx(0.4)
    assert resolve_downsample_ratio(0.3, 720, 1280) == 0.3
