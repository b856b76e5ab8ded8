"""Write the state machine definitions: emr/statemachines/*.asl.json and their template copies.

    python -m captioning.aws.statemachines            # write emr/statemachines/*.asl.json
                                                      # and the copies in emr/cloudformation.yaml
    python -m captioning.aws.statemachines --check    # exit 1 if those files are out of date

The .asl.json files are indented for reading and diffing; the template embeds the same
documents as one-line JSON, because ``aws cloudformation deploy`` sends the template as
the request body, which CloudFormation limits to 51,200 bytes (TEMPLATE_BODY_LIMIT).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from captioning.aws.definition import build
from captioning.aws.pipelines import pipelines
from captioning.aws.steps import JobUnavailable, StepArgumentError

TEMPLATE_BODY_LIMIT = 51_200  # bytes; larger templates must be uploaded to S3 first


def render(document: dict) -> str:
    return json.dumps(document, indent=2) + "\n"


def compact(document: dict) -> str:
    return json.dumps(document, separators=(",", ":"))


def asl_path(root: Path, name: str) -> Path:
    return root / "emr" / "statemachines" / f"{name}.asl.json"


def template_path(root: Path) -> Path:
    return root / "emr" / "cloudformation.yaml"


def _markers(name: str) -> tuple[str, str]:
    return f"# BEGIN GENERATED {name}.asl.json", f"# END GENERATED {name}.asl.json"


def embed(template: str, name: str, document: dict) -> str:
    """``template`` with the Definition between the markers of ``name`` replaced.

    The definition goes in as one line of JSON, which is also a YAML flow mapping.
    """
    begin, end = _markers(name)
    lines = template.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(f"the template needs exactly one '{begin}' ... '{end}' block")
    indent = lines[starts[0]][: len(lines[starts[0]]) - len(lines[starts[0]].lstrip())]
    body = [f"{indent}Definition: {compact(document)}\n"]
    return "".join(lines[: starts[0] + 1] + body + lines[ends[0] :])


def generated_files(root: Path, strict: bool = False) -> tuple[dict[Path, str], list[str]]:
    """{path: content} of every generated file, and the jobs left unchecked."""
    files: dict[Path, str] = {}
    unchecked: list[str] = []
    template = template_path(root).read_text()
    for name, pipeline in pipelines().items():
        document, missing = build(pipeline, strict=strict)
        unchecked += missing
        files[asl_path(root, name)] = render(document)
        template = embed(template, name, document)
    files[template_path(root)] = template
    return files, unchecked


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="statemachines", description="Write the state machine definitions (emr/statemachines/*.asl.json and their copies in emr/cloudformation.yaml).")
    parser.add_argument("--root", default=".", help="project root (default: the current folder)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is out of date")
    parser.add_argument("--strict", action="store_true", help="fail when a job's module cannot be imported (default: render its step unchecked, with a warning)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(args.root)
    try:
        files, unchecked = generated_files(root, strict=args.strict)
    except (JobUnavailable, StepArgumentError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for job_name in unchecked:
        print(f"warning: {job_name}: its module cannot be imported here, so its step arguments were not checked against its parser", file=sys.stderr)
    size = len(files[template_path(root)].encode())
    if size > TEMPLATE_BODY_LIMIT:
        print(f"warning: {template_path(root)} would be {size} bytes, over the {TEMPLATE_BODY_LIMIT} bytes 'aws cloudformation deploy' accepts without --s3-bucket; shorten it", file=sys.stderr)
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"out of date: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
