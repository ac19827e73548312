"""``python -m rlkit.config > config.yml``: the shipped config.yml, from the dataclasses."""

from rlkit.config import default_config_yaml

print(default_config_yaml(), end="")
