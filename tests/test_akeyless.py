"""akeyless through the real executable, against an HTTPS server speaking Akeyless's REST API.

`POST /auth` with an API key (access-type access_key) returns a token; `POST
/get-secret-value` takes {"names": [...], "token": ...} and answers {name: value}; an unknown
item fails the request with 404, an item the role may not read with 403.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from tests.helpers import make_request, run_cli
from tests.https_server import HttpsServer, Request

ACCESS_ID = "p-testaccessid"
ACCESS_KEY = "AKtestAccessKey0123456789="
ITEMS = {
    "/prod/datadog/api_key": "abcdef0123456789",
    "/prod/db": '{"user": "dd", "password": "x"}',
    "/omitted/item": "the server leaves this one out of its answer",
}


class FakeAkeyless:
    def __init__(self, tmp: Any) -> None:
        self.tokens: set[str] = set()
        self._lock = threading.Lock()
        self.server = HttpsServer(self.handle, tmp)

    def handle(self, request: Request) -> tuple[Any, ...]:
        if request.method != "POST":
            return 405, {"error": "method not allowed"}
        if request.path == "/auth":
            return self.auth(request.json())
        if request.path == "/get-secret-value":
            return self.get_secret_value(request.json())
        if request.path.startswith("/html/"):
            return 200, "<html><body>Akeyless Console</body></html>", {"Content-Type": "text/html"}
        return 404, {"error": f"unknown endpoint {request.path}"}

    def auth(self, body: dict[str, Any]) -> tuple[Any, ...]:
        if body.get("access-type") != "access_key":
            return 400, {"error": "unsupported access type"}
        if body.get("access-id") != ACCESS_ID or body.get("access-key") != ACCESS_KEY:
            return 401, {"error": f"Unauthorized: failed to authenticate {body.get('access-id')}"}
        with self._lock:
            token = f"t-{len(self.tokens):032x}"
            self.tokens.add(token)
        return 200, {"token": token}

    def get_secret_value(self, body: dict[str, Any]) -> tuple[Any, ...]:
        if body.get("token") not in self.tokens:
            return 401, {"error": "token is invalid or expired"}
        names = body.get("names")
        if not isinstance(names, list) or not names:
            return 400, {"error": "names is required"}
        answer = {}
        for name in names:
            if name.startswith("/forbidden/"):
                return 403, {"error": f"Unauthorized access to item {name}"}
            if name.startswith("/bulk/"):
                answer[name] = f"value-{name.rsplit('/', 1)[1]}"
            elif name in ITEMS:
                answer[name] = ITEMS[name]
            else:
                return 404, {"error": f"Item {name} not found"}
        answer.pop("/omitted/item", None)
        return 200, answer

    def batch_sizes(self) -> list[int]:
        return [
            len(r.json()["names"]) for r in self.server.requests if r.path == "/get-secret-value"
        ]


@pytest.fixture(scope="session")
def akeyless_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    fake = FakeAkeyless(tmp_path_factory.mktemp("akeyless"))
    yield fake
    fake.server.close()


@pytest.fixture
def akeyless(akeyless_server: FakeAkeyless) -> FakeAkeyless:
    akeyless_server.server.reset()
    return akeyless_server


def run_akeyless(
    fake: FakeAkeyless, handles: list[str], args: tuple[str, ...] = (), **config: Any
) -> Any:
    full = {
        "akeyless_url": fake.server.url,
        "akeyless_session": {"akeyless_access_id": ACCESS_ID, "akeyless_access_key": ACCESS_KEY},
        **config,
    }
    request = make_request(handles, "akeyless", full, timeout=20)
    result = run_cli(request, args, env={"REQUESTS_CA_BUNDLE": fake.server.ca_path})
    assert result.returncode == 0, result.stderr
    return result


def test_values_in_one_request_after_one_authentication(akeyless: FakeAkeyless) -> None:
    result = run_akeyless(akeyless, ["/prod/datadog/api_key", "/prod/db"], args=("--debug",))
    assert result.value("/prod/datadog/api_key") == "abcdef0123456789"
    assert "provider calls" in result.stderr  # debug statistics, yet no value nor credential
    for secret in ("abcdef0123456789", "password", ACCESS_KEY, "t-00000000"):
        assert secret not in result.stderr
    assert result.value("/prod/db") == '{"user": "dd", "password": "x"}'
    assert akeyless.server.count("/auth") == 1
    assert akeyless.batch_sizes() == [2]


@pytest.mark.parametrize("count", [1, 50, 51, 120])
def test_batches_of_max_batch_names(akeyless: FakeAkeyless, count: int) -> None:
    from backends.akeyless import AkeylessBackend

    handles = [f"/bulk/{i}" for i in range(count)]
    result = run_akeyless(akeyless, handles + handles[:3])  # repeated handles: fetched once
    for i in range(count):
        assert result.value(f"/bulk/{i}") == f"value-{i}"
    sizes = akeyless.batch_sizes()
    assert len(sizes) == math.ceil(count / AkeylessBackend.max_batch)
    assert sum(sizes) == count
    assert akeyless.server.count("/auth") == 1


def test_missing_item_gets_its_own_error_and_the_others_their_values(
    akeyless: FakeAkeyless,
) -> None:
    result = run_akeyless(akeyless, ["/prod/datadog/api_key", "/prod/nope", "/prod/db"])
    assert result.value("/prod/datadog/api_key") == "abcdef0123456789"
    assert result.value("/prod/db").startswith("{")
    error = result.error("/prod/nope")
    assert 'Akeyless item "/prod/nope" not found' in error
    assert "Item /prod/nope not found" in error
    # One batch answered 404, then each name alone to find which one.
    assert akeyless.batch_sizes() == [3, 1, 1, 1]


def test_name_missing_from_the_answer(akeyless: FakeAkeyless) -> None:
    result = run_akeyless(akeyless, ["/omitted/item", "/prod/datadog/api_key"])
    assert 'Akeyless answered without a value for "/omitted/item"' in result.error("/omitted/item")
    assert result.value("/prod/datadog/api_key") == "abcdef0123456789"


def test_permission_denied(akeyless: FakeAkeyless) -> None:
    result = run_akeyless(akeyless, ["/forbidden/x", "/prod/datadog/api_key"])
    error = result.error("/forbidden/x")
    assert 'permission denied reading Akeyless item "/forbidden/x"' in error
    assert ACCESS_ID in error and "read permission" in error
    assert result.value("/prod/datadog/api_key") == "abcdef0123456789"


def test_authentication_failure(akeyless: FakeAkeyless) -> None:
    wrong_key = "AKwrongKeyThatMustNotBeEchoed="
    session = {"akeyless_access_id": ACCESS_ID, "akeyless_access_key": wrong_key}
    result = run_akeyless(akeyless, ["/prod/datadog/api_key", "/prod/db"], akeyless_session=session)
    for handle in ("/prod/datadog/api_key", "/prod/db"):
        error = result.error(handle)
        assert "Akeyless authentication failed for access id p-testaccessid (HTTP 401)" in error
        assert wrong_key not in error
    assert wrong_key not in result.stderr
    assert akeyless.server.count("/auth") == 1
    assert akeyless.server.count("/get-secret-value") == 0


@pytest.mark.parametrize("session", [{}, {"akeyless_access_id": ACCESS_ID}])
def test_missing_credentials_in_config(akeyless: FakeAkeyless, session: dict[str, str]) -> None:
    result = run_akeyless(akeyless, ["/prod/db"], akeyless_session=session)
    assert "config.akeyless_session.akeyless_access_key" in result.error("/prod/db")
    assert akeyless.server.count("/auth") == 0


@pytest.mark.parametrize("suffix", ["/", "///"])
def test_trailing_slashes_in_the_url(akeyless: FakeAkeyless, suffix: str) -> None:
    result = run_akeyless(
        akeyless, ["/prod/datadog/api_key"], akeyless_url=akeyless.server.url + suffix
    )
    assert result.value("/prod/datadog/api_key") == "abcdef0123456789"
    assert akeyless.server.count("/auth") == 1  # not "//auth"
    assert akeyless.server.count("/get-secret-value") == 1


def test_url_that_is_not_the_api(akeyless: FakeAkeyless) -> None:
    result = run_akeyless(akeyless, ["/prod/db"], akeyless_url=akeyless.server.url + "/html")
    assert "not a JSON object" in result.error("/prod/db")
    assert "akeyless_url" in result.error("/prod/db")


def test_unreachable_url(akeyless: FakeAkeyless) -> None:
    result = run_akeyless(akeyless, ["/prod/db"], akeyless_url="https://127.0.0.1:9")
    error = result.error("/prod/db")
    assert "could not reach Akeyless at https://127.0.0.1:9 while authenticating" in error


def test_multi_backend_file_mode(akeyless: FakeAkeyless, tmp_path: Any) -> None:
    config = tmp_path / "datadog-secret-backend.yaml"
    config.write_text(
        "backends:\n"
        "  ak:\n"
        "    backend_type: akeyless\n"
        f"    akeyless_url: {akeyless.server.url}/\n"
        "    akeyless_session:\n"
        f"      akeyless_access_id: {ACCESS_ID}\n"
        f"      akeyless_access_key: {ACCESS_KEY}\n"
    )
    handles = ["ak:/prod/datadog/api_key", "ak:/prod/nope"]
    result = run_cli(
        make_request(handles, timeout=20),
        args=["--config", str(config)],
        env={"REQUESTS_CA_BUNDLE": akeyless.server.ca_path},
    )
    assert result.value("ak:/prod/datadog/api_key") == "abcdef0123456789"
    assert "not found" in result.error("ak:/prod/nope")
