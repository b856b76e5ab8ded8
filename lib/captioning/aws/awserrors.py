"""AWS errors as one line that says what failed and what to do (deploy, launch, stack).

An error AWS answers (a missing bucket, a denied action, an unknown stack) or one the SDK
raises before asking (no credentials, no region, no network) is expected in day-to-day
use, so the commands print ``aws_call``'s one-line ``AwsError`` instead of a traceback.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

# What to do, by error code (ClientError) or exception class name (BotoCoreError).
HINTS = {
    "AccessDenied": "the caller lacks a permission; emr/README.md lists what a deployer needs",
    "AccessDeniedException": "the caller lacks a permission; emr/README.md lists what a deployer needs",
    "NoSuchBucket": "check the bucket name (the stack's outputs) and the region",
    "ValidationError": "check the stack name and the region",
    "ExpiredToken": "refresh the credentials",
    "InvalidClientTokenId": "check the credentials",
    "NoCredentialsError": "configure credentials (aws configure, or AWS_PROFILE)",
    "NoRegionError": "set the region once: aws configure set region <region> (or AWS_REGION)",
    "EndpointConnectionError": "check the region and the network",
}


class AwsError(RuntimeError):
    """An AWS call failed; the message is one line."""


def one_line(error: Exception) -> str:
    """``<code>: <message> (<what to do>)`` for a botocore error."""
    response = getattr(error, "response", None)
    if isinstance(response, dict) and "Error" in response:
        code = response["Error"].get("Code", "Error")
        message = response["Error"].get("Message", "") or str(error)
    else:
        code, message = type(error).__name__, str(error)
    hint = HINTS.get(code) or (HINTS["AccessDenied"] if "AccessDenied" in code or "UnauthorizedOperation" in code else "")
    text = " ".join(f"{code}: {message}".split())
    return f"{text} ({hint})" if hint else text


@contextlib.contextmanager
def aws_call(doing: str) -> Iterator[None]:
    """Turn botocore's ClientError and BotoCoreError inside into ``AwsError("<doing>: ...")``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise AwsError(f"{doing}: {one_line(error)}") from error
