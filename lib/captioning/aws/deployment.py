"""The deployed stack's values a state machine definition refers to.

The definitions are generated with ``${Name}`` placeholders; CloudFormation fills them
from the state machine resource's DefinitionSubstitutions, and ``plan`` fills them the
same way from a ``Deployment`` (built from the stack's outputs or from command-line
options) to compute what an execution would run.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Deployment:
    """The values CloudFormation substitutes for the definitions' ``${Name}`` placeholders."""

    artifacts_uri: str  # ${ArtifactsUri}: versions are deployed below it
    log_uri: str  # ${LogUri}
    service_role: str  # ${EmrServiceRole}: role name
    instance_profile: str  # ${EmrInstanceProfile}: instance profile name
    subnet_ids: str  # ${SubnetIds}: comma-separated; EMR picks the zone with capacity among them
    security_configuration: str  # ${SecurityConfiguration}: EMR security configuration name

    def __post_init__(self) -> None:
        if not self.subnet_ids or any(not s.strip() or s != s.strip() for s in self.subnet_ids.split(",")):
            raise ValueError(f"subnet ids must be a comma-separated list without spaces or empty entries, got {self.subnet_ids!r}")

    def substitutions(self) -> dict[str, str]:
        return {
            "ArtifactsUri": self.artifacts_uri.rstrip("/"),
            "LogUri": self.log_uri,
            "EmrServiceRole": self.service_role,
            "EmrInstanceProfile": self.instance_profile,
            "SubnetIds": self.subnet_ids,
            "SecurityConfiguration": self.security_configuration,
        }
