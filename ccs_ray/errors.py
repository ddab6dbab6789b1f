"""The base of every error that means a user mistake rather than a bug.

A spec, source, dataset, pool, model key, cluster layout or results root that cannot be used raises a
subclass of :class:`UserError` whose message names the key, the value and what is allowed; ``ccs-ray``
prints it as one line and exits with status 2. Any other exception is a bug and keeps its traceback.
This module imports nothing, so that the CLI can catch these errors without loading the engine.
"""


class UserError(Exception):
    """A mistake in the input or the environment, explained by the message."""
