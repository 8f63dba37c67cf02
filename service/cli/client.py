"""A Python client of the REST API (httpx), used by the CLI and the demo.

    client = Client.from_env()          # CHILDTUNE_API_URL / CHILDTUNE_API_KEY, else `childtune up`'s files
    job = client.submit({"model": "minilm-l6", "dataset": {"preset": "glue/rte"}})
    page = client.metrics(job["id"], after="0")   # then after=page["next_cursor"], ...

Every non-2xx answer raises :class:`ClientError` with the API's code, message and field.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from service.core import env
from service.core.settings import state_dir

__all__ = ["DEFAULT_URL", "Client", "ClientError"]

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(RuntimeError):
    """An error answer of the API (or no answer: status 0)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status, self.code, self.message, self.field = status, code, message, field
        where = f" [{field}]" if field else ""
        super().__init__(f"{message}{where} (HTTP {status}, {code})" if status else message)


class Client:
    def __init__(self, base_url: str, api_key: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    @classmethod
    def from_env(cls, url: str | None = None, api_key: str | None = None) -> Client:
        """URL and key from arguments, else ``CHILDTUNE_API_URL``/``_KEY``, else ``childtune up``'s files."""
        state = state_dir()
        if url is None:
            url = os.environ.get(env.API_URL)
        if url is None and (state / "api-url").is_file():
            url = (state / "api-url").read_text().strip()
        if api_key is None:
            api_key = os.environ.get(env.API_KEY)
        if api_key is None and (state / "api-key").is_file():
            api_key = (state / "api-key").read_text().strip()
        return cls(url or DEFAULT_URL, api_key)

    def close(self) -> None:
        self.http.close()

    # ---------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(0, "unreachable", f"cannot reach the API at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def healthz(self) -> dict[str, Any]:
        return dict(self._json("GET", "/healthz"))

    def readyz(self) -> dict[str, Any]:
        return dict(self._json("GET", "/readyz"))

    # files
    def upload_file(self, path: str | Path, format: str | None = None) -> dict[str, Any]:
        path = Path(path)
        with path.open("rb") as handle:
            data = {"format": format} if format else None
            return dict(self._json("POST", "/v1/files", files={"file": (path.name, handle)}, data=data))

    def list_files(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/files")["data"])

    def get_file(self, file_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/files/{file_id}"))

    def delete_file(self, file_id: str) -> None:
        self._request("DELETE", f"/v1/files/{file_id}")

    # jobs
    def submit(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/v1/jobs", json=dict(spec)))

    def list_jobs(
        self, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return dict(self._json("GET", "/v1/jobs", params=params))

    def iter_jobs(self, status: str | None = None, page_size: int = 50) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.list_jobs(status, page_size, cursor)
            yield from page["data"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def metrics(self, job_id: str, after: str = "0", limit: int = 1000) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/jobs/{job_id}/metrics", params={"after": after, "limit": limit}))

    def events(self, job_id: str, after: str = "0", limit: int = 1000) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/jobs/{job_id}/events", params={"after": after, "limit": limit}))

    def all_records(self, job_id: str, which: str) -> list[dict[str, Any]]:
        """Every metric or event record so far (pages through the cursor)."""
        fetch = self.metrics if which == "metrics" else self.events
        out: list[dict[str, Any]] = []
        after = "0"
        while True:
            page = fetch(job_id, after)
            out += page["data"]
            if not page["data"]:
                return out
            after = page["next_cursor"]

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/v1/jobs/{job_id}/checkpoints")["data"])

    def mask(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/jobs/{job_id}/mask"))

    def download(self, job_id: str, name: str, dest: str | Path) -> Path:
        """Download checkpoint ``name`` and extract it so that ``dest`` is the folder itself."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
            tar_path = Path(tmp) / "archive.tar"
            self._stream_to(f"/v1/jobs/{job_id}/checkpoints/{name}/archive", tar_path)
            with tarfile.open(tar_path) as tar:
                tar.extractall(tmp, filter="data")
            if dest.exists():
                raise ClientError(0, "exists", f"{dest} already exists; choose another --to folder")
            (Path(tmp) / name).rename(dest)
        return dest

    # experiments: a grid of jobs compared with a baseline
    def submit_experiment(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/v1/experiments", json=dict(spec)))

    def list_experiments(self, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return dict(self._json("GET", "/v1/experiments", params=params))

    def iter_experiments(self, page_size: int = 50) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.list_experiments(page_size, cursor)
            yield from page["data"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def get_experiment(self, experiment_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/experiments/{experiment_id}"))

    def experiment_curves(self, experiment_id: str, metric: str | None = None) -> dict[str, Any]:
        """Each cell's eval metric by step, over its seeds (``metric``: default the compared one)."""
        params = {"metric": metric} if metric else None
        return dict(self._json("GET", f"/v1/experiments/{experiment_id}/curves", params=params))

    def cancel_experiment(self, experiment_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/experiments/{experiment_id}/cancel"))

    def experiment_plots(self, experiment_id: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/v1/experiments/{experiment_id}/plots")["data"])

    def download_plot(self, experiment_id: str, name: str, dest_path: str | Path) -> Path:
        """Download plot ``name`` (a PNG) to ``dest_path``; the file appears only once complete."""
        dest = Path(dest_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            self._stream_to(f"/v1/experiments/{experiment_id}/plots/{name}", tmp)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def _stream_to(self, path: str, target: Path) -> None:
        """GET ``path`` into the file ``target``, 1 MiB at a time (an API error raises its ClientError)."""
        try:
            with self.http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                with target.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise ClientError(0, "unreachable", f"download failed: {exc}") from exc


def _error(response: httpx.Response) -> ClientError:
    try:
        body = response.json()["error"]
        return ClientError(response.status_code, str(body["code"]), str(body["message"]), body.get("field"))
    except (ValueError, KeyError, TypeError):
        return ClientError(response.status_code, "http_error", response.text[:500] or response.reason_phrase)
