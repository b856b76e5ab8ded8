"""make demo refuses a folder filled by other settings up front, and reuses its own."""
import argparse
import json

import pytest

from captioning.pipeline.demo import RECIPE_FILE, build_parser, claim_workdir, recipe_of
from captioning.errors import InputError


def recipe(*argv: str) -> dict:
    args: argparse.Namespace = build_parser().parse_args(list(argv))
    return recipe_of(args)


def test_a_new_folder_is_claimed_and_a_rerun_with_the_same_settings_accepted(tmp_path):
    work = tmp_path / "demo-output"
    claim_workdir(str(work), recipe())
    assert json.loads((work / RECIPE_FILE).read_text()) == recipe()
    (work / "model").mkdir()
    claim_workdir(str(work), recipe())  # no error: same settings


def test_other_settings_are_refused_naming_what_changed_and_what_to_do(tmp_path):
    work = tmp_path / "demo-output"
    claim_workdir(str(work), recipe())
    with pytest.raises(InputError) as error:
        claim_workdir(str(work), recipe("--pooling", "avg", "--epochs", "3"))
    message = str(error.value)
    assert "pooling 'max' -> 'avg'" in message and "epochs 12 -> 3" in message
    assert f"rm -rf {work}" in message
    assert json.loads((work / RECIPE_FILE).read_text()) == recipe()  # untouched


def test_a_folder_with_files_but_no_recipe_is_refused(tmp_path):
    (tmp_path / "sample").mkdir()
    with pytest.raises(InputError, match="another demo or program"):
        claim_workdir(str(tmp_path), recipe())
    assert not (tmp_path / RECIPE_FILE).exists()
