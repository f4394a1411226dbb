"""Errors that say what went wrong, with which file, and how to fix it."""

from __future__ import annotations


class Noise2MapError(Exception):
    """Base class of every error the suite raises on purpose."""


class ConfigError(Noise2MapError, ValueError):
    """A config value is missing or not one of the allowed values."""


class DataNotFoundError(Noise2MapError, FileNotFoundError):
    """A raw or prepared data set is not where the config says it is."""


class DataFormatError(Noise2MapError, ValueError):
    """A file exists but its content is not what the data set's layout promises."""


class ChecksumError(Noise2MapError, ValueError):
    """A downloaded or supplied file does not match its recorded checksum."""


class CheckpointError(Noise2MapError, FileNotFoundError):
    """A checkpoint is missing or cannot be loaded into the model."""


class PluginError(ConfigError):
    """A model plugin (entry point or config module) cannot be loaded or clashes with a model."""


class UnknownNameError(Noise2MapError, KeyError):
    """A model, data set or scheduler name is not in its registry."""

    def __init__(self, kind: str, name: str, available):
        self.kind, self.name, self.available = kind, name, sorted(available)
        super().__init__(f"unknown {kind} {name!r}; available: {', '.join(self.available)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]
