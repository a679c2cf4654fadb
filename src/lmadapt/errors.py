"""The one exception type for mistakes a user can make and fix."""

from __future__ import annotations


class LmadaptError(Exception):
    """A problem with the user's input: says what went wrong, where, and how to fix it.

    The CLI prints it in one or two lines and exits with code 2, without a traceback.
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def __reduce__(self):
        # Rebuilt from its parts, not its message, when it crosses a process (a Ray task's error).
        return (_rebuild, (self.what, self.where, self.fix))

    def render(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


def _rebuild(what: str, where: str | None, fix: str | None) -> LmadaptError:
    return LmadaptError(what, where=where, fix=fix)


def nearest(name: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The choice closest to a misspelt name, if any is close enough to suggest."""
    import difflib

    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return found[0] if found else None


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    suggestion = nearest(name, choices)
    valid = ", ".join(sorted(choices))
    if suggestion:
        return f"did you mean '{suggestion}'? Valid: {valid}"
    return f"valid: {valid}"
