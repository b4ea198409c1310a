"""aws.ssm: AWS Systems Manager Parameter Store, handle = the parameter's name.

Names are fetched with GetParameters (WithDecryption, up to 10 names per call); names AWS
lists in InvalidParameters get a not-found error. StringList values stay comma-separated.

v0 file mode keys:
* `parameter_path`: every parameter under the path (recursive, paginated GetParametersByPath,
  fetched once per run). A handle is the parameter's full name (`/app/prod/api_key`, as v0)
  or its name relative to the path (`api_key`, or `db/password` for a nested one).
* `parameters`: the list of names this backend may read; other handles are refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from backends import aws_session
from secret_backend.backend import Backend, CommonConfig, Ref
from secret_backend.deadline import Deadline
from secret_backend.errors import SecretError

GET = "ssm:GetParameters"
BY_PATH = "ssm:GetParametersByPath"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParameterStoreConfig(CommonConfig):
    aws_session: aws_session.AwsSessionConfig = dataclasses.field(
        default_factory=aws_session.AwsSessionConfig
    )
    # v0 file mode: a path whose parameters (recursively) this backend serves.
    parameter_path: str | None = None
    # v0 file mode: the parameter names this backend serves.
    parameters: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class PathKey:
    """The fetch key of `parameter_path`: all its parameters come in one (paginated) fetch."""

    path: str


class ParameterStoreBackend(Backend):
    type_name = "aws.ssm"
    Config = ParameterStoreConfig
    config: ParameterStoreConfig
    max_batch = 10  # GetParameters' Names limit
    default_concurrency = 4  # SSM throttles at 40 requests/s per account, shared

    def __init__(self, config: ParameterStoreConfig, deadline: Deadline) -> None:
        super().__init__(config, deadline)
        self.aws = aws_session.connect(
            "ssm", config.aws_session, deadline, self.count_call, max_connections=self.concurrency
        )

    def parse(self, handle: str) -> Ref:
        if not handle:
            raise SecretError("empty handle: expected a parameter name such as /app/prod/api_key")
        path, listed = self.config.parameter_path, self.config.parameters
        if handle in listed or (path is None and not listed):
            return Ref(handle)
        if path is not None:
            return Ref(PathKey(path), handle)
        raise SecretError(
            f'parameter "{handle}" is not in this backend\'s `parameters` list '
            f"({len(listed)} names); add it there to read it"
        )

    def describe_key(self, key: Hashable) -> str:
        if isinstance(key, PathKey):
            return f'parameters under "{key.path}"'
        return f'parameter "{key}"'

    def fetch(self, keys: Sequence[Hashable], deadline: Deadline) -> Mapping[Hashable, Any]:
        results: dict[Hashable, Any] = {}
        names = [k for k in keys if isinstance(k, str)]
        for key in keys:
            if isinstance(key, PathKey):
                try:
                    results[key] = self._by_path(key.path, deadline)
                except SecretError as exc:
                    results[key] = exc
        if names:
            results.update(self._get(names, deadline))
        return results

    def select(self, fetched: Any, ref: Ref) -> str:
        if not isinstance(fetched, dict):
            return str(fetched)
        assert isinstance(ref.fetch_key, PathKey)
        handle, path = str(ref.selector), ref.fetch_key.path
        joined = path.rstrip("/") + "/" + handle.lstrip("/")
        for name in (handle, joined):
            if name in fetched:
                return str(fetched[name])
        raise SecretError(
            f'parameter "{handle}" not found under parameter_path "{path}" in region '
            f'{self.aws.region} (looked for "{handle}" and "{joined}" among {len(fetched)} '
            "parameters there)"
        )

    # -- provider calls ------------------------------------------------------------------

    def _get(self, names: list[str], deadline: Deadline) -> dict[Hashable, Any]:
        if len(names) == 1:
            what = f'parameter "{names[0]}"'
        else:
            shown = ", ".join(f'"{n}"' for n in names[:3])
            what = f"{len(names)} parameters ({shown}{', ...' if len(names) > 3 else ''})"
        answer = self.aws.call(
            "get_parameters",
            what=what,
            action=GET,
            deadline=deadline,
            Names=names,
            WithDecryption=True,
        )
        results: dict[Hashable, Any] = {}
        for parameter in answer.get("Parameters", []):
            spelled = {
                parameter.get("Name"),
                parameter.get("ARN"),
                f"{parameter.get('Name')}{parameter.get('Selector') or ''}",
            }
            for name in names:
                if name in spelled:
                    results[name] = str(parameter.get("Value", ""))
        for name in answer.get("InvalidParameters", []):
            if name in names:
                results[name] = SecretError(
                    f'parameter "{name}" not found in region {self.aws.region} (check the full '
                    'name, including the leading "/", and the region)'
                )
        return results

    def _by_path(self, path: str, deadline: Deadline) -> dict[str, str]:
        values: dict[str, str] = {}
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Path": path, "Recursive": True, "WithDecryption": True}
            if token:
                params["NextToken"] = token
            page = self.aws.call(
                "get_parameters_by_path",
                what=f'parameters under "{path}"',
                action=BY_PATH,
                deadline=deadline,
                **params,
            )
            for parameter in page.get("Parameters", []):
                values[str(parameter["Name"])] = str(parameter.get("Value", ""))
            token = page.get("NextToken")
            if not token:
                return values
