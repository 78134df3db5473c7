"""The one error type for user mistakes in a configuration, and the warning for what is left out."""

import warnings


class UserError:
    """Mixin of the errors that are the user's to fix: IPython (Jupyter, Colab) shows them as the CLI prints
    them, without a traceback."""

    def _render_traceback_(self) -> list[str]:
        return f"{type(self).__name__}: {self}".splitlines()


class ConfigError(UserError, ValueError):
    """A mistake in the user's configuration: printed as one clear message, never as a traceback.

    `path` is the parameter path (`targets[0].transforms[2].random_rotate.degree`),
    `file`/`line` where the value came from, when known.
    """

    def __init__(self, message: str, path: str = "", file: str | None = None, line: int | None = None):
        self.message, self.path, self.file, self.line = message, path, file, line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        return f"{where}{self.path + ': ' if self.path else ''}{self.message}"

    def located(self, file: str | None, line: int | None) -> "ConfigError":
        """The same error with a location, unless it has one already."""
        if self.file is None and file is not None:
            self.file, self.line = file, line
            self.args = (str(self),)
        return self


class ConfigWarning(UserWarning):
    """Something in the configuration that is accepted but probably not meant (shown as `warning: ...`)."""


def warn(message: str, path: str = "", file: str | None = None, line: int | None = None) -> None:
    warnings.warn(str(ConfigError(message, path, file, line)), ConfigWarning, stacklevel=3)
