"""The config's keys are documented once (config.HELP) and every key has its flag and help."""

import dataclasses

from bptt.train.commands import add_train_arguments
from bptt.train.config import HELP, TrainConfig


def test_every_setting_is_documented_once_and_has_a_flag():
    import argparse

    keys = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "extra"]
    assert sorted(HELP) == sorted(keys)
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    text = p.format_help()
    for k in keys:
        assert "--" + k.replace("_", "-") in text
        assert HELP[k].split()[0] in text
