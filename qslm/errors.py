"""User-facing errors: the CLI prints these as one clear line and exits non-zero."""


class QslmError(Exception):
    """A problem with the user's input (file, model, option, constraint), not a bug."""
