"""The one error type users see: the CLI prints ``error: <message>`` and exits 2."""


class MmarError(Exception):
    """A user-facing failure (bad input, damaged file, missing optional dependency).

    The message is one line that says what went wrong and, where possible, what to do.
    """


class ContainerError(MmarError):
    """A codec file is truncated, damaged, of a newer version, or for another model."""


def require(module: str, extra: str):
    """Import an optional dependency or raise an actionable :class:`MmarError`.

    ``require("pesq", "eval")`` returns the module, or fails with
    ``pip install "mmar[eval]"`` in the message.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MmarError(f"{module} is not installed: pip install \"mmar[{extra}]\" ({e})") from None


def command(main):
    """Decorator for a module's ``main(argv) -> int``: a :class:`MmarError` becomes one ``error:``
    line on stderr and exit status 2 (the ``mmar`` command does the same in :func:`mmar.cli.main`)."""
    import functools
    import sys

    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except MmarError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run


def gradio_errors(gr):
    """A decorator for Gradio handlers: an :class:`MmarError` becomes ``gr.Error`` (its one line
    shown in the page). ``functools.wraps`` keeps the signature, so Gradio still injects
    ``progress=gr.Progress()``."""
    import functools

    def decorate(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except MmarError as e:
                raise gr.Error(str(e)) from None
        return wrapped

    return decorate
