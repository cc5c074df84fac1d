"""Errors that are the user's to fix.

Anything raised as a :class:`NasError` (or a subclass) reaches the user as one line on stderr and
exit code 2; every other exception is a bug and keeps its traceback.
"""


class NasError(Exception):
    """A user mistake or an unusable input: bad option, missing data, invalid genotype, ..."""


class ConfigError(NasError):
    """A config key that does not exist, a value of the wrong type, a size that cannot work."""


class DataError(NasError):
    """A dataset that is missing or malformed."""


class GenotypeError(NasError):
    """A genotype that cannot be read or does not fit the search space."""


class RunDirError(NasError):
    """A run directory that is missing, foreign, or holds an unreadable checkpoint."""
