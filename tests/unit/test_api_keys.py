"""Reading API keys from API_KEYS and API_KEYS_FILE."""

from __future__ import annotations

from pathlib import Path

import pytest

from piagent.errors import Unauthorized
from piagent.http.auth import load_api_keys
from piagent.settings import ConfigError, Settings

KEY_A = "a" * 16
KEY_B = "b-0123456789abcdef"


def keys(**fields):
    return load_api_keys(Settings(**fields))


def test_no_keys_means_no_authentication():
    assert keys() is None
    assert keys(api_keys=" , ") is None


def test_comma_separated_keys_with_spaces():
    api_keys = keys(api_keys=f" {KEY_A} , {KEY_B} ")
    assert api_keys.identify(f"Bearer {KEY_A}") != api_keys.identify(f"bearer {KEY_B}")


def test_key_file_skips_comments_and_blank_lines_and_adds_to_api_keys(tmp_path: Path):
    path = tmp_path / "keys"
    path.write_text(f"# phone\n{KEY_B}\n\n   \n")
    api_keys = keys(api_keys=KEY_A, api_keys_file=path)
    api_keys.identify(f"Bearer {KEY_A}")
    api_keys.identify(f"Bearer {KEY_B}")
    with pytest.raises(Unauthorized):
        api_keys.identify("Bearer # phone")


def test_key_file_without_keys_stops_the_start(tmp_path: Path):
    path = tmp_path / "keys"
    path.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="holds no key"):
        keys(api_keys_file=path)


def test_missing_key_file_stops_the_start(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot be read"):
        keys(api_keys_file=tmp_path / "absent")


@pytest.mark.parametrize(
    ("key", "complaint"),
    [
        ("short-key", "shorter than 16"),
        ("ключ" * 5, "printable ASCII"),
        ("with space" * 2, "space"),
    ],
)
def test_unusable_key_stops_the_start_without_showing_it(key, complaint):
    with pytest.raises(ConfigError) as caught:
        keys(api_keys=f"{KEY_A},{key}")
    assert complaint in str(caught.value)
    assert "#2" in str(caught.value)
    assert key not in str(caught.value)


def test_empty_key_file_variable_means_none():
    assert Settings.model_validate({"api_keys_file": ""}).api_keys_file is None


def test_settings_never_print_the_keys():
    assert KEY_A not in repr(Settings(api_keys=KEY_A))
