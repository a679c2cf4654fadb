"""The support bot's chat page in a real headless Chromium against the real service (a subprocess on a loopback
port): replies with their intent, confidence, escalation reason and sources; feedback and handoff reaching the
store; the API key asked for and used; nothing loaded from outside the service."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lmadapt.apps.support.store import ConversationStore
from tests.conftest import REPO, skip_unavailable

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the browser fixture says how to install it
    sync_playwright = None

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
LOOPBACK = "http://127.0.0.1:"
API_KEY = "page-k3y"
SERVER = """
import sys
from lmadapt.apps.support.bot import load_bot
from lmadapt.apps.support.service import create_support_app
from lmadapt.apps.support.store import ConversationStore
from lmadapt.serving.app import serve_forever
from lmadapt.serving.settings import ServiceSettings

folder, store_url, port, api_key = sys.argv[1:]
settings = ServiceSettings(api_key=api_key or None, workers=1)
serve_forever(create_support_app(load_bot(folder), ConversationStore(store_url), settings), "127.0.0.1", int(port))
"""


@dataclass
class Service:
    url: str
    store_url: str
    db_path: Path


@dataclass
class Visit:
    """A page on the service, with every URL it requested and every error it logged."""

    page: object
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def services(tiny_bot, tmp_path_factory):
    """The tiny bot served twice, each on its own store: without a key ("open") and with API_KEY ("keyed")."""
    from lmadapt.serving.app import wait_until_serving

    work = tmp_path_factory.mktemp("support-page")
    env = os.environ | {"PYTHONPATH": str(REPO / "src"), "LMADAPT_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1"}
    started = {}
    for name, key in (("open", ""), ("keyed", API_KEY)):
        db_path = work / f"{name}.db"
        service = Service(f"http://127.0.0.1:{free_port()}", f"sqlite:///{db_path}", db_path)
        port = service.url.rsplit(":", 1)[1]
        command = [sys.executable, "-c", SERVER, str(tiny_bot), service.store_url, port, key]
        started[name] = (service, subprocess.Popen(command, cwd=REPO, env=env))
    try:
        for service, process in started.values():
            wait_until_serving(service.url, process, timeout_s=60)
        yield {name: service for name, (service, _) in started.items()}
    finally:
        for _, process in started.values():
            process.terminate()
        for _, process in started.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright, one per module."""
    fix = "apt-get install chromium (Debian/Ubuntu) and pip install playwright"
    required = "LMADAPT_TEST_BROWSER_REQUIRED"
    if sync_playwright is None:
        skip_unavailable(f"chat page tests not run: playwright is not installed. Install: {fix}", required)
    if not CHROMIUM.exists():
        skip_unavailable(f"chat page tests not run: {CHROMIUM} is missing. Install: {fix}", required)
    playwright = sync_playwright().start()
    try:
        try:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except PlaywrightError as error:
            reason = str(error).splitlines()[0]
            skip_unavailable(f"chat page tests not run: {CHROMIUM} did not start ({reason}). Install: {fix}", required)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def visit(browser):
    """Opens a service's page in a fresh browser context (its own sessionStorage), recording requests and errors."""
    contexts = []

    def open_page(service: Service) -> Visit:
        context = browser.new_context()
        contexts.append(context)
        visited = Visit(context.new_page())
        visited.page.on("request", lambda request: visited.requests.append(request.url))
        visited.page.on("console", lambda message: message.type == "error" and visited.errors.append(message.text))
        visited.page.on("pageerror", lambda error: visited.errors.append(str(error)))
        visited.page.goto(service.url + "/")
        return visited

    yield open_page
    for context in contexts:
        context.close()


def assert_stayed_on_the_service(visited: Visit) -> None:
    """Every request went to the loopback service (nothing from a CDN or the internet)."""
    assert visited.requests
    outside = [url for url in visited.requests if not url.startswith(LOOPBACK)]
    assert not outside, f"the page requested outside the service: {outside}"


def send(page, text: str):
    """Types `text`, presses Enter, and returns the new reply bubble and the service's JSON answer."""
    replies = page.locator(".reply")
    before = replies.count()
    page.fill("#message", text)
    with page.expect_response(lambda response: response.url.endswith("/v1/chat")) as response:
        page.press("#message", "Enter")
    expect(replies).to_have_count(before + 1)
    return replies.last, response.value.json()


def test_page_loads_offline_and_names_the_bot(visit, services):
    visited = visit(services["open"])
    page = visited.page
    expect(page.locator("#bot-name")).to_have_text("bot")
    expect(page.locator("#bot-version")).to_have_text("version 1")
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#handoff")).to_be_disabled()  # there is no conversation to hand off yet
    assert any(url.endswith("/v1/bot") for url in visited.requests)
    assert_stayed_on_the_service(visited)
    assert visited.errors == []


def test_a_reply_shows_its_answer_intent_confidence_and_sources(visit, services):
    visited = visit(services["open"])
    page = visited.page
    reply, body = send(page, "the film was great and moving")
    expect(page.locator(".customer").last).to_have_text("the film was great and moving")
    expect(page.locator("#message")).to_have_value("")
    assert body["intent"] == "positive" and not body["escalate"]
    expect(reply.locator(".answer")).to_have_text(body["answer"])
    expect(reply.locator(".intent")).to_have_text("intent: positive")
    expect(reply.locator(".confidence")).to_have_text(f"confidence: {int(100 * body['confidence'] + 0.5)}%")
    expect(reply.locator(".reason")).to_have_count(0)
    sources = reply.locator(".source")
    expect(sources).to_have_count(len(body["sources"]))
    expect(sources.first).to_be_hidden()  # collapsed until asked for
    reply.locator(".sources summary").click()
    expect(sources.first.locator(".source-question")).to_have_text(body["sources"][0]["question"])
    expect(sources.first.locator(".source-similarity")).to_contain_text(f"{body['sources'][0]['similarity']:.3f}")
    assert_stayed_on_the_service(visited)
    assert visited.errors == []


def test_text_is_shown_as_text_never_as_markup(visit, services):
    visited = visit(services["open"])
    page = visited.page
    send(page, "the <b>film</b> was great")
    expect(page.locator(".customer").last).to_have_text("the <b>film</b> was great")
    expect(page.locator("#conversation b")).to_have_count(0)


def test_an_out_of_scope_message_shows_its_escalation_reason(visit, services):
    visited = visit(services["open"])
    reply, body = send(visited.page, "q w e r t y")
    assert body["escalate"] and body["reason"] == "out_of_scope"
    expect(reply.locator(".answer")).to_have_text(body["answer"])
    expect(reply.locator(".reason")).to_be_visible()
    expect(reply.locator(".reason")).to_have_text("escalated: out of scope")
    expect(reply.locator(".reason")).to_have_attribute("data-reason", "out_of_scope")
    assert visited.errors == []


def test_asking_for_a_human_escalates_and_hands_the_conversation_off(visit, services):
    visited = visit(services["open"])
    page = visited.page
    reply, body = send(page, "I want to talk to a human")
    expect(reply.locator(".reason")).to_have_text("escalated: user asked for human")
    expect(reply.locator(".reason")).to_have_attribute("data-reason", "user_asked_for_human")
    expect(page.locator(".handed-off")).to_be_visible()
    expect(page.locator("#handoff")).to_be_disabled()
    with ConversationStore(services["open"].store_url) as store:
        assert store.conversation(body["conversation_id"])["status"] == "handed_off"


def test_thumbs_up_is_confirmed_and_stored(visit, services):
    visited = visit(services["open"])
    page = visited.page
    reply, body = send(page, "the acting was superb")
    with ConversationStore(services["open"].store_url) as store:
        before = store.counts()["feedback"]
    with page.expect_response(lambda response: response.url.endswith("/v1/feedback")) as response:
        reply.locator(".thumbs-up").click()
    assert response.value.ok
    expect(reply.locator(".feedback-status")).to_contain_text("Thanks")
    expect(reply.locator(".thumbs-up")).to_be_disabled()
    expect(reply.locator(".thumbs-down")).to_be_disabled()
    with ConversationStore(services["open"].store_url) as store:
        assert store.counts()["feedback"] == before + 1
    with sqlite3.connect(services["open"].db_path) as db:
        stored = db.execute("SELECT conversation_id, turn_id, rating FROM feedback ORDER BY id DESC LIMIT 1").fetchone()
    assert stored == (body["conversation_id"], body["turn_id"], "up")
    assert visited.errors == []


def test_handoff_button_passes_the_conversation_to_a_person(visit, services):
    visited = visit(services["open"])
    page = visited.page
    _, first = send(page, "the film was great and moving")
    expect(page.locator("#conversation")).to_have_attribute("data-conversation-id", first["conversation_id"])
    page.click("#handoff")
    expect(page.locator(".handed-off")).to_be_visible()
    reply, body = send(page, "the music was wonderful")
    assert body["conversation_id"] == first["conversation_id"] and body["reason"] == "handed_off"
    expect(reply.locator(".answer")).to_have_text("a person has this conversation")
    expect(reply.locator(".intent")).to_have_count(0)
    with ConversationStore(services["open"].store_url) as store:
        stored = store.conversation(first["conversation_id"])
    assert stored["status"] == "handed_off"
    assert [turn["reason"] for turn in stored["turns"]] == [None, "handed_off"]
    assert visited.errors == []


def test_new_conversation_clears_the_page_and_starts_another(visit, services):
    visited = visit(services["open"])
    page = visited.page
    _, first = send(page, "I want to talk to a human")
    page.click("#new-conversation")
    expect(page.locator("#conversation > *")).to_have_count(0)
    expect(page.locator("#handoff")).to_be_disabled()
    reply, second = send(page, "the film was great and moving")
    assert second["conversation_id"] != first["conversation_id"]
    expect(reply.locator(".answer")).to_have_text(second["answer"])
    expect(page.locator(".handed-off")).to_have_count(0)


def test_a_keyed_service_asks_for_the_key_then_works_with_it(visit, services):
    visited = visit(services["keyed"])
    page = visited.page
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error.locator(".error-message")).to_contain_text("needs an API key")
    expect(error.locator(".error-message")).to_contain_text("Enter the API key above")
    expect(error.locator(".error-fix")).to_contain_text("X-API-Key")

    page.fill("#message", "the film was great and moving")
    with page.expect_response(lambda response: response.url.endswith("/v1/chat")) as refused:
        page.press("#message", "Enter")
    assert refused.value.status == 401
    expect(page.locator(".reply")).to_have_count(0)
    expect(page.locator("#message")).to_have_value("the film was great and moving")  # kept to send again

    page.fill("#api-key", "wrong")
    page.click("#use-key")
    expect(error.locator(".error-message")).to_contain_text("missing or wrong API key")

    page.fill("#api-key", API_KEY)
    page.click("#use-key")
    expect(page.locator("#bot-name")).to_have_text("bot")
    expect(error).to_be_hidden()
    page.press("#message", "Enter")
    expect(page.locator(".reply .intent")).to_have_text("intent: positive")
    assert page.evaluate("Object.values(sessionStorage)") == [API_KEY]

    page.reload()  # the key outlives a reload of the tab
    expect(page.locator("#api-key")).to_have_value(API_KEY)
    expect(page.locator("#bot-version")).to_have_text("version 1")
    expect(error).to_be_hidden()
    assert_stayed_on_the_service(visited)
    assert visited.errors and all("401" in message for message in visited.errors)  # only the refusals
