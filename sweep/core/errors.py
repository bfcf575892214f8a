"""Exceptions a user can act on: each message is one line naming the input and the rule broken."""


class SweepError(Exception):
    """Base of every error the project reports to a user without a traceback."""


class ValidationError(SweepError, ValueError):
    """An input (memory map, bank, configuration field, file) breaks a rule of docs/model.md."""


class PluginError(SweepError):
    """A plugin failed to load or gave data that breaks the hook's contract."""
