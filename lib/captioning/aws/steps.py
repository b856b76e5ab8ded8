"""spark-submit argument lists generated from the jobs' own argparse parsers.

A cluster step is described as a job name and a mapping ``option -> value``; the values
are literals or references into the state machine's data (``Ref``, ``Fmt``, ``Splice``).
``job_arguments`` checks the mapping against the job's ``build_parser()`` — every option
must exist there, every required option must be given, flags take booleans, options with
``nargs='+'`` take lists, literal values must pass the option's type and choices — and
raises ``StepArgumentError`` otherwise. So a renamed or removed option breaks the
generator (and its test) instead of a step on a running cluster.

A job whose module cannot be imported (not written yet, or missing a dependency) raises
``JobUnavailable``; callers decide whether that is fatal.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

from captioning.aws import layout
from captioning.cli import Command, command, stages


class StepArgumentError(ValueError):
    """A step's options do not match its job's parser."""


class JobUnavailable(ImportError):
    """The job's module (or something it imports) cannot be imported here."""


@dataclass(frozen=True)
class Ref:
    """A value taken from the state machine's data by a JSONPath, e.g. ``$.config.dataset``."""

    path: str

    def __post_init__(self) -> None:
        if not self.path.startswith("$"):
            raise ValueError(f"a reference path starts with '$', got {self.path!r}")


@dataclass(frozen=True)
class Fmt:
    """A string built from a template with ``{}`` placeholders filled by references."""

    template: str
    args: tuple[Ref, ...]

    def __post_init__(self) -> None:
        if self.template.count("{}") != len(self.args):
            raise ValueError(f"template {self.template!r} has {self.template.count('{}')} placeholders for {len(self.args)} references")


@dataclass(frozen=True)
class Splice:
    """A list in the state data whose items become separate arguments (nargs='+' options)."""

    ref: Ref


Token = Union[str, Ref, Fmt]  # one argument
Piece = Union[Token, Splice]  # one argument, or a run of them
Value = Union[str, int, float, bool, Ref, Fmt, Splice, Sequence[str]]


@dataclass(frozen=True)
class Job:
    """A pipeline stage as a cluster runs it: its ``captioner`` command and entry script."""

    command: Command

    @property
    def name(self) -> str:
        return self.command.name

    @property
    def module(self) -> str:
        return self.command.module

    @property
    def script(self) -> str:
        return self.command.script

    @property
    def script_path(self) -> str:
        """Relative path of the entry script in an artifacts version folder."""
        return layout.job_script(self.script)


def job(name: str) -> Job:
    """The stage ``captioner <name>`` runs (the registry in captioning.cli)."""
    chosen = command(name)
    if chosen is None or not chosen.stage:
        raise StepArgumentError(f"{name!r} is not a pipeline stage (known: {', '.join(c.name for c in stages())})")
    return Job(chosen)


def job_parser(name: str) -> argparse.ArgumentParser:
    """``build_parser()`` of the job's module; ``JobUnavailable`` when it cannot be imported."""
    spec = job(name)
    try:
        module = importlib.import_module(spec.module)
    except ImportError as error:
        raise JobUnavailable(f"job {name}: cannot import {spec.module} ({error})") from error
    return module.build_parser()


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings and action.required:
            raise StepArgumentError(f"{parser.prog}: positional argument {action.dest!r} is not supported by the step generator")
        for option in action.option_strings:
            found[option] = action
    return found


def _check_literal(job_name: str, option: str, action: argparse.Action, value: str) -> None:
    converted: object = value
    if action.type is not None and callable(action.type):
        try:
            converted = action.type(value)
        except (TypeError, ValueError) as error:
            raise StepArgumentError(f"{job_name} {option}: {value!r} is not accepted ({error})") from error
    if action.choices is not None and converted not in action.choices:
        raise StepArgumentError(f"{job_name} {option}: {value!r} is not one of {list(action.choices)}")


def _literal(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(value)
    return str(value)


def job_arguments(job_name: str, options: Mapping[str, Value], parser: argparse.ArgumentParser | None = None) -> list[Piece]:
    """The job's argument pieces for ``options``, checked against ``parser``.

    ``parser`` defaults to the job's own ``build_parser()``; ``unchecked_job_arguments``
    renders the same pieces without a check, for a job that cannot be imported here.
    """
    parser = parser if parser is not None else job_parser(job_name)
    known = _options(parser)
    pieces: list[Piece] = []
    for option, value in options.items():
        if option not in known:
            raise StepArgumentError(f"{job_name}: unknown option {option} (the job accepts {', '.join(sorted(known))})")
        action = known[option]
        if action.nargs == 0:
            if not isinstance(value, bool):
                raise StepArgumentError(f"{job_name} {option}: a flag takes True or False, got {value!r}")
        elif action.nargs in ("+", "*"):
            if not isinstance(value, (Splice, list, tuple)):
                raise StepArgumentError(f"{job_name} {option}: takes several values (nargs={action.nargs!r}); give a list or a Splice")
            if isinstance(value, (list, tuple)):
                if action.nargs == "+" and not value:
                    raise StepArgumentError(f"{job_name} {option}: needs at least one value")
                for item in value:
                    if isinstance(item, str):
                        _check_literal(job_name, option, action, item)
        elif action.nargs not in (None, "?"):
            raise StepArgumentError(f"{job_name} {option}: nargs={action.nargs!r} is not supported by the step generator")
        elif isinstance(value, (Splice, list, tuple, bool)):
            raise StepArgumentError(f"{job_name} {option}: takes one value, got {value!r}")
        elif isinstance(value, (str, int, float)):
            _check_literal(job_name, option, action, _literal(value))
        pieces.extend(_render_option(option, value))
    given = set(options)
    for option, action in known.items():
        if action.required and not given.intersection(action.option_strings):
            raise StepArgumentError(f"{job_name}: required option {'/'.join(action.option_strings)} is not given")
    return pieces


def unchecked_job_arguments(options: Mapping[str, Value]) -> list[Piece]:
    """The same pieces without a parser to check them against (the job's module is missing)."""
    return [piece for option, value in options.items() for piece in _render_option(option, value)]


def _render_option(option: str, value: Value) -> list[Piece]:
    if isinstance(value, bool):
        return [option] if value else []
    if isinstance(value, Splice):
        return [option, value]
    if isinstance(value, (list, tuple)):
        return [option, *(_literal(v) if not isinstance(v, (Ref, Fmt)) else v for v in value)]
    if isinstance(value, (Ref, Fmt)):
        return [option, value]
    return [option, _literal(value)]


def check_argv(job_name: str, argv: Sequence[str], parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse a concrete argument list with the job's parser; ``StepArgumentError`` if it refuses."""
    parser = parser if parser is not None else job_parser(job_name)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parser.parse_args(list(argv))
    except SystemExit as error:
        message = errors.getvalue().strip().splitlines()
        raise StepArgumentError(message[-1] if message else f"{job_name}: argument parsing exited with {error.code}") from None


def conf_token(key: str, value: Token) -> Token:
    """The ``key=value`` argument of one ``--conf``, built at run time when ``value`` is a reference."""
    if "{" in key or "}" in key:
        raise StepArgumentError(f"Spark setting name {key!r} has a brace")
    if isinstance(value, Ref):
        return Fmt(f"{key}={{}}", (value,))
    if isinstance(value, Fmt):
        return Fmt(f"{key}={value.template}", value.args)
    return f"{key}={value}"


@dataclass(frozen=True)
class SparkStep:
    """One EMR step: ``spark-submit <spark options> <entry script> <job options>``.

    ``key`` names the step's entries in the state data (``$.args.<key>``); ``extra`` is a
    list in the state data appended to the job's arguments as given (for options that are
    optional at run time, e.g. ``--backbone-weights``), checked only when the job runs.
    """

    key: str
    state: str
    job: str
    options: tuple[tuple[str, Value], ...]
    spark_conf: tuple[tuple[str, Token], ...] = ()  # a Ref value comes from the state data
    extra: Ref | None = None
    timeout_s: int = 24 * 3600  # the state machine's TimeoutSeconds for the step
    deploy_mode: str = "cluster"
    retry: bool = True  # the state machine reruns a failed step once

    @property
    def spec(self) -> Job:
        return job(self.job)

    def pieces(self, script: Token, validate: bool = True) -> list[Piece]:
        """Every argument of the step's command line, the job's part checked when ``validate``."""
        options = dict(self.options)
        if len(options) != len(self.options):
            raise StepArgumentError(f"{self.job}: an option is given twice")
        job_part = job_arguments(self.job, options) if validate else unchecked_job_arguments(options)
        submit: list[Piece] = ["spark-submit", "--master", "yarn", "--deploy-mode", self.deploy_mode]
        for key, value in self.spark_conf:
            submit += ["--conf", conf_token(key, value)]
        tail: list[Piece] = [Splice(self.extra)] if self.extra is not None else []
        return [*submit, script, *job_part, *tail]
