"""The ``mmar`` command. One module per subcommand group; every failure goes through one
path: ``error: <one line>`` on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from ..errors import MmarError


class Parser(argparse.ArgumentParser):
    """argparse, but a wrong argument gives one line, not a usage dump."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise MmarError(f"{self.prog}: {message} (see {self.prog} --help)")


def version() -> str:
    """The installed distribution's version (the package's own ``__version__`` when run from a checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("mmar")
    except PackageNotFoundError:
        from .. import __version__

        return __version__


def print_info(info: dict, as_json: bool, width: int = 24, none: str = "None") -> None:
    """Print ``info`` as indented JSON, or as aligned ``key value`` lines (``none`` for missing values)."""
    if as_json:
        print(json.dumps(info, indent=1))
    else:
        for k, v in info.items():
            print(f"{k:<{width}} {none if v is None else v}")


def build_parser() -> argparse.ArgumentParser:
    from . import bench, codec, image, tts, video

    parser = Parser(prog="mmar", description="Multimodal autoregressive generation: speech codec, TTS, image and video.")
    parser.add_argument("--version", action="version", version=f"mmar {version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    codec.add_parser(sub)
    bench.add_parser(sub)
    image.add_parser(sub)
    tts.add_parser(sub)
    video.add_parser(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so atomic writers remove their temp files."""


def _terminate(signum, _frame):
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    """Run the command; every failure is ``error: <one line>`` on stderr and a nonzero status
    (2 for errors, 128 + the signal for SIGINT, SIGTERM and SIGHUP)."""
    previous = {}
    try:
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                try:
                    previous[sig] = signal.signal(sig, _terminate)
                except ValueError:  # not the main thread: leave signals alone
                    pass
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except MmarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a failure no writer or reader turned into an MmarError
        print(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        from ..atomic import remove_live_temps

        remove_live_temps()  # the signal may have struck before a writer could clean up
        print("error: interrupted", file=sys.stderr)
        return 128 + (e.args[0] if isinstance(e, Terminated) else signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
