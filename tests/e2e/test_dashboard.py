"""The dashboard (``/ui/``) in a real browser against the real stack: Debian's chromium driven by
Playwright, the API, Redis and a worker that trains.

Sign-in (a wrong key is refused, a key that stops working returns to sign-in); a tiny job
submitted through the form whose loss curve grows while it trains, read by cursor (each step
once); cancel from the job page; an invalid value refused by the API and shown next to its
input; another tenant's job is "not found"; an experiment's cells and curves; a causal-lm job
from the form (no column fields) with its samples table; the form's and the filter's choices are
the contract's, read from the API's OpenAPI document. Every request the page makes goes to the
API's own origin. Screenshots of each page go to
``$CHILDTUNE_TEST_ARTIFACTS/screenshots`` (default ``test-artifacts/``);
``CHILDTUNE_UPDATE_SCREENSHOTS=1`` also copies the job page to ``docs/images/dashboard-job.png``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from service.core.contract import DEVICES, MODES, PRECISIONS, PRESETS, STATUSES, TASK_TYPES, ChildTuningSpec
from tests.e2e.stack import KEYS, ROOT, Stack, model_root, rank_pids, wait_for
from tests.workers.tiny import write_tiny_decoder

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("CHILDTUNE_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "screenshots"
DOCS_IMAGE = ROOT / "docs" / "images" / "dashboard-job.png"
WAIT_MS = 120_000  # one page element to appear (the machine may be busy)
FINAL = ("succeeded", "failed", "cancelled")


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not Path(CHROMIUM).exists():
        return "chromium is not installed (apt-get install chromium; Playwright's own download is not used)"
    return None


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread
# while it is open, and later tests' asyncio.run() refuses to start under it.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, started once. Missing, it fails the tests under CI and skips them elsewhere."""
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the dashboard tests must run under CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


class Dashboard:
    """One browser tab on the dashboard, recording every request it makes and every uncaught error."""

    def __init__(self, page: Any, base: str) -> None:
        self.page, self.base = page, base
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.base}/ui/#{route}" if route else f"{self.base}/")

    def sign_in(self, tenant: str = "alice") -> None:
        from playwright.sync_api import expect

        self.open()
        self.page.get_by_label("API key", exact=True).fill(KEYS[tenant])
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()

    def status(self) -> str:
        """The job page's status, as text."""
        return str(self.page.locator('[data-fact="status"] .status').inner_text()).split(" · ")[0]

    def points(self, name: str) -> int:
        """How many points the chart ``name`` shows (0 while the page has not drawn it)."""
        data = self.chart(name)
        return len(data[0]) if data else 0

    def chart(self, name: str) -> list[list[float | None]]:
        """The data of one of the page's uPlot charts ([] when it has none yet)."""
        data: list[list[float | None]] = self.page.evaluate(
            "name => { const c = window.dashboard.charts[name];"
            " return c ? c.data.map((s) => Array.from(s)) : []; }",
            name,
        )
        return data

    def shot(self, name: str, full_page: bool = False) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def check_clean(self) -> None:
        """No uncaught script error, and every request went to the API's origin (or a blob of it)."""
        assert self.errors == [], self.errors
        origin = urlsplit(self.base)
        assert any(urlsplit(u).path == "/ui/app.js" for u in self.requests), self.requests
        assert any(urlsplit(u).path == "/openapi.json" for u in self.requests), self.requests
        assert any(urlsplit(u).path.startswith("/v1/") for u in self.requests), self.requests
        for url in self.requests:
            if url.startswith("data:"):
                continue  # inline, never leaves the page
            parts = urlsplit(url[len("blob:") :] if url.startswith("blob:") else url)
            assert (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc), url


@pytest.fixture
def dash(browser: Any, stack: Stack) -> Iterator[Dashboard]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        yield Dashboard(page, stack.url)
    finally:
        context.close()


def job_spec(stack: Stack, **hyper: Any) -> dict[str, Any]:
    """A tiny 1-rank job on the tiny model (named by its folder under the model root)."""
    return {
        "model": stack.model.name,
        "dataset": {"preset": "glue/rte", "max_train_examples": 32, "max_eval_examples": 16},
        "childtuning": {"mode": "childtuning-d", "reserve_p": 0.3},
        "hyperparameters": {
            "max_steps": 8,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "max_seq_length": 32,
            "eval_every": 4,
            "save_every": 4,
            "seed": 3,
            **hyper,
        },
        "resources": {"num_ranks": 1, "device": "cpu"},
    }


def test_sign_in_refuses_a_wrong_key_and_a_refused_key_returns_to_sign_in(dash: Dashboard) -> None:
    from playwright.sync_api import expect

    page = dash.page
    dash.open()
    assert page.url.endswith("/ui/")  # GET / redirects to the dashboard
    key = page.get_by_label("API key", exact=True)
    expect(key).to_be_focused()
    key.fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    message = page.locator("#sign-in-message")
    expect(message).to_contain_text("refused")
    expect(key).to_have_attribute("aria-invalid", "true")
    assert page.evaluate("sessionStorage.getItem('childtune.apiKey')") is None
    dash.shot("sign-in-refused")

    key.fill(KEYS["alice"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('childtune.apiKey')") == KEYS["alice"]
    assert page.evaluate("localStorage.length") == 0  # the key stays in this tab only
    # Every API call carries the key as a bearer header.
    with page.expect_request(lambda r: "/v1/jobs?" in r.url) as sent:
        pass
    assert sent.value.headers["authorization"] == f"Bearer {KEYS['alice']}"

    # A key the API stops accepting: the next poll answers 401 and the page returns to sign-in.
    page.evaluate("sessionStorage.setItem('childtune.apiKey', 'key-revoked-0123456789')")
    expect(page.locator("#sign-in-message")).to_contain_text("refused the key")
    expect(page.get_by_label("API key", exact=True)).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('childtune.apiKey')") is None

    # Sign out: the key is forgotten.
    dash.sign_in()
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#sign-in-message")).to_have_text("Signed out.")
    assert page.evaluate("sessionStorage.getItem('childtune.apiKey')") is None
    dash.check_clean()


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _signal(pids: list[int], sig: signal.Signals) -> list[int]:
    """Send ``sig`` to each of ``pids`` still there; returns those it reached."""
    reached = []
    for pid in dict.fromkeys(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            reached.append(pid)
    return reached


def test_a_job_submitted_with_the_form_draws_its_loss_curve_as_it_trains(
    dash: Dashboard, stack: Stack, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = dash.page
    dash.sign_in()
    page.get_by_role("link", name="New job", exact=True).first.click()
    expect(page.get_by_role("heading", name="New job")).to_be_visible()
    form = {
        "Model": "tiny-bert",
        "reserve_p": "0.3",
        "Learning rate": "1e-3",
        "Batch size": "8",
        "Max steps": "120",
        "Max sequence length": "32",
        "Evaluate every": "40",
        "Ranks": "1",
    }
    for label, value in form.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_label("Preset", exact=True).select_option("glue/rte")
    page.get_by_label("Mode", exact=True).select_option("childtuning-d")
    page.get_by_label("Device", exact=True).select_option("cpu")
    page.get_by_text("Advanced", exact=True).click()
    page.get_by_label("Max training examples", exact=True).fill("240")
    page.get_by_label("Max evaluation examples", exact=True).fill("16")
    page.get_by_label("Checkpoint every", exact=True).fill("60")
    dash.shot("new-job")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r"#/jobs/job-[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("heading", name=f"Job {job_id}")).to_be_visible()
    client = stack.client("alice")
    submitted = client.get_job(job_id)["spec"]
    assert submitted["model"] == "tiny-bert" and submitted["hyperparameters"]["max_steps"] == 120
    assert submitted["dataset"] == {**submitted["dataset"], "max_train_examples": 240, "preset": "glue/rte"}

    # Watch the chart while the job trains. However fast the job runs against the page's 2 s
    # poll, it is held still (SIGSTOP) once the API serves its first loss, until the chart shows
    # the partial curve, then let go: the chart must grow from a part to the whole, by cursor.
    job_dir = stack.artifacts / "jobs" / job_id
    wait_for(lambda: '"phase"' in _text(job_dir / "events.jsonl"), 300, "the job's first phase")
    ranks = rank_pids(job_dir)
    assert ranks, "no process of the job found"

    def stored() -> int:  # the losses the API serves (rank 0's sink thread stores them)
        return sum(r["kind"] == "train" for r in client.all_records(job_id, "metrics"))

    wait_for(lambda: stored() > 0, 300, "the first loss in the store", interval=0.02)
    held = _signal(ranks + rank_pids(job_dir), signal.SIGSTOP)
    try:
        seen = stored()  # fixed while held: the sink's thread is in the stopped rank
        assert seen < 120, f"the job stored all its {seen} losses before it could be held"
        wait_for(lambda: 0 < dash.points("loss") <= seen, 60, "the chart's partial curve")
    finally:
        _signal(held, signal.SIGCONT)
    wait_for(lambda: client.get_job(job_id)["status"] in FINAL, 300, "the job to end")
    assert client.get_job(job_id)["status"] == "succeeded", (job_dir / "launcher.log").read_text()[-3000:]
    expect(page.locator('[data-fact="status"] .status')).to_have_text("succeeded")
    # The machines of each attempt, as the job record lists them (one node for this job).
    (attempt,) = client.get_job(job_id)["nodes"]
    machine = attempt["nodes"][0]
    expect(page.locator('[data-fact="nodes"] dd')).to_have_text(
        f"attempt 1: {machine['worker']} ({machine['addr']})"
    )
    wait_for(lambda: dash.points("loss") == 120, 30, "the last loss points")
    steps, losses = dash.chart("loss")
    assert steps == list(range(1, 121))  # each step once: read by cursor, never again from 0
    assert all(isinstance(v, int | float) for v in losses)
    # Evaluations every 40 steps and at each epoch's end (30 steps): as the API lists them.
    evals = [r["step"] for r in client.all_records(job_id, "metrics") if r["kind"] == "eval"]
    assert dash.chart("eval")[0] == evals and {40, 80, 120} <= set(evals), evals
    after = [
        parse_qs(urlsplit(u).query)["after"][0] for u in dash.requests if f"/v1/jobs/{job_id}/metrics?" in u
    ]
    # "0" until the first records arrive (next_cursor stays "0" while there are none), then
    # each request passes the last next_cursor: never back to the start, never backwards. (How
    # many distinct cursors there are depends on how fast the job trains against the poll.)
    started = next(i for i, cursor in enumerate(after) if cursor != "0")
    ids = [tuple(int(part) for part in cursor.split("-")) for cursor in after[started:]]
    assert after[0] == "0" and "0" not in after[started:] and ids == sorted(ids), after
    expect(page.locator("#eval-h")).to_have_text("Evaluation: accuracy")

    # Timeline, mask per layer with its audit, checkpoints.
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("phase: training")
    expect(timeline).to_contain_text("finished: succeeded at step 120")
    expect(page.locator('#mask-table tr[data-group="layer 1"]')).to_be_visible()
    expect(page.locator('#mask-table tr[data-group="layer 0"]')).to_contain_text("%")
    expect(page.locator("#mask-audit")).to_contain_text("Audit of the final weights")
    expect(page.locator("#cancel-job")).to_be_hidden()
    page.locator("#spec").scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, 0)")
    dash.shot("job-full", full_page=True)
    shot = dash.shot("job")
    if os.environ.get("CHILDTUNE_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, DOCS_IMAGE)

    # Download the final model through the page (fetch with the bearer header, then a blob).
    with page.expect_download() as download:
        page.get_by_role("button", name="Download model", exact=True).click()
    assert download.value.suggested_filename == f"{job_id}-model.tar"
    saved = tmp_path / "model.tar"
    download.value.save_as(saved)
    with tarfile.open(saved) as tar:
        assert "model/config.json" in tar.getnames()
    expect(page.locator("#download-message")).to_contain_text("Downloaded model")

    # The jobs list shows it, with its final metric and the progress at the end.
    page.get_by_role("link", name="Jobs", exact=True).first.click()
    row = page.locator(f'#jobs-table tr[data-id="{job_id}"]')
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("120 / 120")
    expect(row).to_contain_text("childtuning-d (p 0.3)")
    expect(row).to_contain_text("accuracy")
    status = page.get_by_label("Status", exact=True)
    status.focus()
    status.select_option("failed")
    expect(page.locator(f'#jobs-table tr[data-id="{job_id}"]')).to_have_count(0)
    expect(page.locator("#jobs-table tbody")).to_contain_text("No failed jobs")
    status.select_option("succeeded")
    expect(page.locator(f'#jobs-table tr[data-id="{job_id}"]')).to_have_count(1)
    expect(status).to_be_focused()  # filtered in place: the focus stays on the filter
    assert page.url.endswith("#/jobs?status=succeeded")
    dash.shot("jobs")
    # A phone's width: the page reflows, only the table scrolls (inside its own region).
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    dash.shot("jobs-narrow")
    page.get_by_role("link", name=job_id).click()
    expect(page.locator("#loss-note")).to_contain_text("120 training records")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    dash.shot("job-narrow")
    dash.check_clean()


def test_cancel_a_running_job_from_its_page(dash: Dashboard, stack: Stack) -> None:
    from playwright.sync_api import expect

    page = dash.page
    client = stack.client("alice")
    job_id = client.submit(job_spec(stack, max_steps=5000, eval_every=5000, save_every=5000))["id"]
    dash.sign_in()
    dash.open(f"/jobs/{job_id}")
    cancel = page.get_by_role("button", name="Cancel job")
    expect(cancel).to_be_visible()
    page.wait_for_function(
        "() => { const c = window.dashboard.charts.loss; return c && c.data[0].length >= 2; }",
        timeout=240_000,
    )
    assert dash.status() == "running"
    cancel.click()
    expect(page.locator('[data-fact="status"] .status')).to_have_text("cancelled", timeout=60_000)
    expect(cancel).to_be_hidden()
    assert client.get_job(job_id)["status"] == "cancelled"
    steps = dash.chart("loss")[0]
    assert 2 <= len(steps) < 5000 and steps == list(range(1, len(steps) + 1))
    dash.shot("job-cancelled")
    dash.check_clean()


def test_an_invalid_value_is_shown_next_to_its_input_and_submits_nothing(
    dash: Dashboard, stack: Stack, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = dash.page
    client = stack.client("alice")
    before = [j["id"] for j in client.list_jobs(limit=100)["data"]]
    dash.sign_in()
    dash.open("/new")
    page.get_by_label("Model", exact=True).fill("tiny-bert")
    reserve = page.get_by_label("reserve_p", exact=True)
    reserve.fill("1.5")
    page.get_by_role("button", name="Submit job").click()
    error = page.locator("#f-reserve-p-error")
    expect(error).to_contain_text("childtuning.reserve_p")  # the API's message, next to the input
    expect(error).to_contain_text("1.5")
    expect(reserve).to_have_attribute("aria-invalid", "true")
    expect(reserve).to_be_focused()
    assert "f-reserve-p-error" in (reserve.get_attribute("aria-describedby") or "").split()
    expect(page.locator("#form-message")).to_contain_text("not submitted")
    dash.shot("new-job-invalid")

    # A field in the Advanced section, closed again before submitting: opened, marked and focused.
    reserve.fill("0.3")
    advanced = page.get_by_text("Advanced", exact=True)
    advanced.click()
    page.get_by_label("Max evaluation examples", exact=True).fill("0")
    advanced.click()
    expect(page.get_by_label("Max evaluation examples", exact=True)).to_be_hidden()
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#f-max-eval-examples-error")).to_contain_text("dataset.max_eval_examples")
    expect(page.get_by_label("Max evaluation examples", exact=True)).to_be_focused()
    expect(reserve).not_to_have_attribute("aria-invalid", "true")  # the earlier error is gone

    # An upload the API refuses: its message names the row, next to the file input.
    page.get_by_label("Upload files", exact=True).check()
    bad = tmp_path / "train.csv"
    bad.write_text("text,label\nthe best film,1\na row without a label\n")
    page.get_by_label("Training file", exact=True).set_input_files(str(bad))
    expect(page.locator("#f-train-file-error")).to_contain_text("line 3")
    good = tmp_path / "dev.csv"
    good.write_text("sentence,label\nthe best film,1\na waste of time,0\n")
    page.get_by_label("Evaluation file", exact=True).set_input_files(str(good))
    expect(page.locator("#f-eval-file-status")).to_contain_text("2 rows; columns sentence, label")
    page.get_by_role("button", name="Submit job").click()  # the training file is still missing
    expect(page.locator("#f-train-file-error")).to_contain_text("dataset.train_file")
    assert [j["id"] for j in client.list_jobs(limit=100)["data"]] == before
    dash.check_clean()


def test_the_choices_are_the_contracts_read_from_the_openapi_document(dash: Dashboard) -> None:
    """The new-job form's selects and the jobs' status filter offer the contract's values
    (service.core.contract), which the page reads from /openapi.json: a document with another
    mode and status shows them, and one it cannot read is said, not guessed around."""
    from playwright.sync_api import expect

    page = dash.page

    def options(select: str) -> list[str]:
        values: list[str] = page.locator(f"{select} option").evaluate_all("os => os.map((o) => o.value)")
        return values

    dash.sign_in()
    assert options("#status-filter") == ["", *STATUSES]
    dash.open("/new")
    expect(page.get_by_role("heading", name="New job")).to_be_visible()
    assert options("#f-mode") == list(MODES)
    assert page.locator("#f-mode").input_value() == ChildTuningSpec.model_fields["mode"].default
    assert options("#f-preset") == list(PRESETS)
    assert options("#f-task-type") == list(TASK_TYPES)
    assert options("#f-device") == list(DEVICES)
    assert options("#f-precision") == list(PRECISIONS)
    dash.check_clean()

    def altered(route: Any) -> None:
        response = route.fetch()
        doc = response.json()
        doc["components"]["schemas"]["ChildTuningSpec"]["properties"]["mode"]["enum"].append("x-new-mode")
        status = next(p for p in doc["paths"]["/v1/jobs"]["get"]["parameters"] if p["name"] == "status")
        status["schema"]["anyOf"][0]["enum"].append("x-new-status")
        route.fulfill(response=response, json=doc)

    page.route("**/openapi.json", altered)
    page.reload()
    expect(page.get_by_role("heading", name="New job")).to_be_visible()
    assert options("#f-mode") == [*MODES, "x-new-mode"]
    dash.open("/jobs")
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    assert options("#status-filter") == ["", *STATUSES, "x-new-status"]

    page.unroute("**/openapi.json")
    page.route("**/openapi.json", lambda route: route.fulfill(status=503, body="unavailable"))
    page.reload()
    expect(page.get_by_role("heading", name="Cannot read the API’s description")).to_be_visible()
    expect(page.locator("#contract-error")).to_contain_text("503")
    page.unroute("**/openapi.json")
    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    assert dash.errors == []


def test_the_api_docs_render_from_this_origin_under_their_policy(dash: Dashboard) -> None:
    """/docs in a real browser: Swagger UI (vendored, not from a CDN) renders the operations of
    /openapi.json; no request leaves this origin and the policy refuses nothing on the page."""
    from playwright.sync_api import expect

    refused: list[str] = []
    dash.page.on(
        "console", lambda msg: refused.append(msg.text) if "Content Security Policy" in msg.text else None
    )
    dash.page.goto(f"{dash.base}/docs")
    expect(dash.page.locator(".opblock").first).to_be_visible()
    assert dash.page.locator(".opblock").count() >= 20  # the API's operations, one block each
    expect(dash.page.locator(".opblock-summary-path", has_text="/v1/jobs").first).to_be_visible()
    assert all(urlsplit(u).netloc == urlsplit(dash.base).netloc for u in dash.requests), dash.requests
    assert not refused and not dash.errors, (refused, dash.errors)


def test_another_tenants_job_is_not_found(dash: Dashboard, stack: Stack) -> None:
    from playwright.sync_api import expect

    page = dash.page
    bob = stack.client("bob")
    job_id = bob.submit(job_spec(stack, max_steps=5000))["id"]
    bob.cancel(job_id)  # nothing of bob's needs to run
    dash.sign_in("alice")
    # On a fresh load the keyboard's first stop is the skip link, which moves the focus on.
    page.reload()
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    dash.open(f"/jobs/{job_id}")
    expect(page.get_by_role("heading", name="Job not found")).to_be_visible()
    expect(page.locator("#not-found")).to_contain_text(job_id)
    dash.shot("job-not-found")
    dash.open("/jobs")
    expect(page.locator("#jobs-table tbody tr").first).to_be_visible()
    expect(page.locator(f'#jobs-table tr[data-id="{job_id}"]')).to_have_count(0)
    dash.check_clean()


def test_an_experiment_shows_its_cells_and_curves(dash: Dashboard, stack: Stack) -> None:
    from playwright.sync_api import expect

    page = dash.page
    client = stack.client("alice")
    exp = client.submit_experiment(
        {
            "name": "dashboard: D vs vanilla",
            "base": job_spec(stack, max_steps=8, eval_every=4, save_every=8),
            "axes": {"childtuning.mode": ["vanilla", "childtuning-d"], "hyperparameters.seed": [1, 2]},
            "baseline": {"childtuning.mode": "vanilla"},
            "max_parallel": 1,
        }
    )
    dash.sign_in()
    page.get_by_role("link", name="Experiments", exact=True).click()
    row = page.locator(f'#experiments-table tr[data-id="{exp["id"]}"]')
    expect(row).to_contain_text("dashboard: D vs vanilla")
    dash.shot("experiments")
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Experiment: dashboard: D vs vanilla")).to_be_visible()
    wait_for(lambda: client.get_experiment(exp["id"])["status"] in FINAL, 480, "the experiment")
    assert client.get_experiment(exp["id"])["status"] == "succeeded"
    expect(page.locator('[data-fact="status"] .status')).to_have_text("succeeded", timeout=30_000)
    cells = page.locator("#cells-table tbody tr")
    expect(cells).to_have_count(2)
    expect(cells.nth(0)).to_contain_text("baseline")
    verdict = client.get_experiment(exp["id"])["cells"][1]["vs_baseline"]["verdict"]
    expect(cells.nth(1)).to_contain_text(verdict)
    expect(cells.nth(1)).to_contain_text("[")  # the 95% interval of two seeds
    wait_for(lambda: len(dash.chart("curves")) == 3 and dash.chart("curves")[0] == [4, 8], 30, "the curves")
    for series in dash.chart("curves")[1:]:
        assert all(isinstance(v, int | float) for v in series)
    expect(page.locator("#experiment-jobs tbody tr")).to_have_count(4)
    dash.shot("experiment")
    dash.check_clean()


def test_a_causal_lm_job_from_the_form_shows_the_models_answers(
    dash: Dashboard, stack: Stack, tmp_path: Path
) -> None:
    """causal-lm through the form (the column fields hidden and not sent), then its job page: the
    samples table of the latest evaluation, an earlier one picked, texts shown as text."""
    from playwright.sync_api import expect

    page = dash.page
    if not (model_root(stack.env) / "tiny-llama" / "config.json").exists():
        write_tiny_decoder(model_root(stack.env) / "tiny-llama")
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(3) for b in range(3)]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    # Markup and a line break in a prompt: shown as text, never parsed as HTML.
    dev_rows = [{"prompt": "<b>1+1</b>\n=", "completion": "2"}, {"prompt": "2+2=", "completion": "4"}]
    dev.write_text("".join(json.dumps(r) + "\n" for r in dev_rows))

    dash.sign_in()
    dash.open("/new")
    page.get_by_label("Upload files", exact=True).check()
    expect(page.get_by_label("Label column", exact=True)).to_be_visible()
    page.get_by_label("Task type", exact=True).select_option("causal-lm")
    for label in ("Text column", "Second text column", "Label column"):
        expect(page.get_by_label(label, exact=True)).to_be_hidden()
    page.get_by_label("Training file", exact=True).set_input_files(str(train))
    expect(page.locator("#f-train-file-status")).to_contain_text("8 rows")
    page.get_by_label("Evaluation file", exact=True).set_input_files(str(dev))
    expect(page.locator("#f-eval-file-status")).to_contain_text("2 rows")
    form = {
        "Model": "tiny-llama",
        "Learning rate": "1e-2",
        "Batch size": "4",
        "Max steps": "2",
        "Max sequence length": "48",
        "Evaluate every": "1",
        "Ranks": "1",
    }
    for label, value in form.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_label("Mode", exact=True).select_option("vanilla")
    page.get_by_label("Device", exact=True).select_option("cpu")
    with page.expect_request(lambda r: r.method == "POST" and urlsplit(r.url).path == "/v1/jobs") as sent:
        page.get_by_role("button", name="Submit job").click()
    # No column field is sent (the API refuses them for causal-lm).
    assert sorted(sent.value.post_data_json["dataset"]) == ["eval_file", "task_type", "train_file"]
    page.wait_for_url(re.compile(r"#/jobs/job-[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    client = stack.client("alice")
    assert client.get_job(job_id)["spec"]["dataset"]["task_type"] == "causal-lm"

    wait_for(lambda: client.get_job(job_id)["status"] in FINAL, 240, "the causal-lm job")
    assert client.get_job(job_id)["status"] == "succeeded", (
        stack.artifacts / "jobs" / job_id / "launcher.log"
    ).read_text()[-3000:]
    samples = [e for e in client.all_records(job_id, "events") if e["type"] == "samples"]
    assert [e["step"] for e in samples] == [1, 2], samples

    def shown() -> list[list[str]]:
        return [
            [str(td.text_content()) for td in row.locator("td").all()]
            for row in page.locator("#samples-table tbody tr").all()
        ]

    def expected(event: dict[str, Any]) -> list[list[str]]:
        def text(value: str) -> str:  # line breaks shown as ⏎
            return re.sub(r"\r\n|\r|\n", "⏎", value) if value else "(empty)"

        return [[text(s["prompt"]), text(s["answer"]), text(s["reference"])] for s in event["samples"]]

    expect(page.locator('[data-fact="status"] .status')).to_have_text("succeeded")
    expect(page.locator("#samples-h")).to_have_text("Samples at step 2")
    expect(page.locator("#samples-table tbody tr")).to_have_count(2)
    assert shown() == expected(samples[1])
    assert "<b>1+1</b>⏎=" in shown()[0][0] and page.locator("#samples-table b").count() == 0
    page.get_by_label("Evaluation at", exact=True).select_option(label="at step 1")
    expect(page.locator("#samples-h")).to_have_text("Samples at step 1")
    assert shown() == expected(samples[0])

    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("data: train 8 rows, eval 2 rows")
    expect(timeline).to_contain_text("chat template on")
    expect(timeline).to_contain_text("samples at step 2: 2 answers")
    expect(page.locator("#eval-h")).to_have_text("Evaluation: perplexity (lower is better)")
    expect(page.locator("#eval-note")).to_contain_text("token_accuracy")
    assert dash.chart("eval")[0] == [1, 2]
    page.locator("#samples").scroll_into_view_if_needed()
    dash.shot("job-causal-lm")
    dash.check_clean()
