"""The chat page in a real headless browser (Debian's chromium driven by Playwright): type a
message, watch the reply stream in, check it is the API's reply to the same request, regenerate,
start a new chat, and see tool calls drawn as boxes. Skips, saying why, without the browser."""
import os
import sys
import time

import pytest

from minigpt.chat.server import Server
from minigpt.inference import kvcache
from minigpt.tokenizer import load_tokenizer

sys.path.insert(0, os.path.dirname(__file__))
from chatmodel import make_chat_model  # noqa: E402
from test_serve import post  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no browser at {CHROMIUM} (as root: apt-get update && apt-get install -y chromium)",
                allow_module_level=True)

RECORD_LENGTHS = """() => {  // the reply's length each time the page changes
  window.lengths = [];
  new MutationObserver(() => {
    const r = document.querySelectorAll("#log .assistant .body");
    if (r.length) window.lengths.push(r[r.length - 1].textContent.length);
  }).observe(document.getElementById("log"), {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    ckpt, tok_path = make_chat_model(str(tmp_path_factory.mktemp("chat")))
    server = Server(("127.0.0.1", 0), kvcache.DecodeWeights.load(ckpt), load_tokenizer(tok_path), slots=4)
    step = server.worker.engine.step

    def slow_step():  # ~5 ms a token, as a real model takes at least: the browser sees the reply grow
        time.sleep(0.005)
        return step()
    server.worker.engine.step = slow_step
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def page(srv):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(srv.url + "/")
            yield page
        finally:
            browser.close()


def last_reply(page):
    return page.evaluate("() => { const r = document.querySelectorAll('#log .assistant .body');"
                         " return r[r.length - 1].textContent; }")


def test_send_and_stream(page, srv):
    page.fill("#max_tokens", "150")
    page.fill("#seed", "1")
    page.evaluate(RECORD_LENGTHS)
    page.fill("#input", "Hello, café 日本 🙂")
    page.click("#send")
    page.wait_for_selector("#log .assistant.done")
    text = last_reply(page)
    partial = {n for n in page.evaluate("() => window.lengths") if 0 < n < len(text)}
    assert len(partial) >= 3, partial  # the reply appeared piece by piece
    assert page.locator("#log .user .body").text_content() == "Hello, café 日本 🙂"
    status, body = post(srv.url, {"messages": [{"role": "user", "content": "Hello, café 日本 🙂"}],
                                  "temperature": 0.8, "top_p": 0.95, "max_tokens": 150, "seed": 1})
    assert status == 200 and text == body["choices"][0]["message"]["content"] and text
    assert "finished: length" in page.text_content("#status")


def test_regenerate_and_new_chat(page):
    page.fill("#seed", "")  # a fresh draw
    before = last_reply(page)
    page.click("#regenerate")
    page.wait_for_function("() => document.querySelectorAll('#log .assistant').length === 1 && "
                           "document.querySelector('#log .assistant').classList.contains('done') && "
                           "!document.querySelector('#send').disabled")
    assert last_reply(page) != before  # replaced, not appended
    page.click("#new")
    assert page.evaluate("() => document.getElementById('log').children.length") == 0
    page.fill("#input", "again")
    page.press("#input", "Enter")
    page.wait_for_selector("#log .assistant.done")
    assert page.evaluate("() => document.querySelectorAll('#log .msg').length") == 2


def test_tool_calls_are_boxes(page):
    boxes = page.evaluate("""() => {
      const d = document.createElement("div");
      render(d, "a<|tool_start|>calculator: 2*3<|tool_end|><|output_start|>6<|output_end|>b<SEARCH_START>x");
      return {text: d.textContent, boxes: [...d.querySelectorAll(".tool")].map(e => [e.dataset.kind, e.textContent])};
    }""")
    assert boxes == {"text": "acalculator: 2*36bx",
                     "boxes": [["tool call", "calculator: 2*3"], ["tool output", "6"], ["search", "x"]]}
