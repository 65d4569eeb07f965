"""`minigpt serve` through the official openai client and raw HTTP: replies whole and streamed,
n > 1, stop strings, usage counts; every kind of bad request is a 400 with OpenAI's error object;
a client dropped mid-stream frees its slot without stalling the others; 32 clients at once."""
import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from minigpt.chat import api
from minigpt.chat.server import Server
from minigpt.inference import kvcache
from minigpt.tokenizer import Tokenizer, load_tokenizer
from minigpt.tokenizer.chat import render_prompt

sys.path.insert(0, os.path.dirname(__file__))
from chatmodel import TEXT, make_chat_model  # noqa: E402

openai = pytest.importorskip("openai", reason="the openai client is not installed (pip install openai)")
HI = [{"role": "user", "content": "Hello there, café 日本"}]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_chat_model(str(tmp_path_factory.mktemp("chat")))


@pytest.fixture(scope="module")
def srv(files):
    ckpt, tok_path = files
    server = Server(("127.0.0.1", 0), kvcache.DecodeWeights.load(ckpt), load_tokenizer(tok_path),
                    model_name="tiny-chat", slots=4, max_queued=64).start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0, timeout=60)


def post(url, body, path="/v1/chat/completions", headers=None):
    """Raw POST: (status, parsed JSON body)."""
    host, port = url[len("http://"):].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, data, {"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    out = r.status, json.loads(r.read() or b"null")
    conn.close()
    return out


def get(url, path):
    host, port = url[len("http://"):].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("GET", path)
    r = conn.getresponse()
    out = r.status, r.getheader("Content-Type"), r.read()
    conn.close()
    return out


def streamed(client, **kw):
    """(text per choice, finish per choice, usage or None, chunks) of a streamed request."""
    texts, finishes, usage, chunks = {}, {}, None, []
    for ch in client.chat.completions.create(model="tiny-chat", stream=True, **kw):
        chunks.append(ch)
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
    return texts, finishes, usage, chunks


# --------------------------------------------------------------------------------------------------
# the openai client


def test_reply_and_usage(client, srv):
    r = client.chat.completions.create(model="tiny-chat", messages=HI, max_tokens=12, seed=1)
    (c,) = r.choices
    assert r.object == "chat.completion" and c.message.role == "assistant" and c.finish_reason == "length"
    assert isinstance(c.message.content, str) and c.message.content
    assert r.usage.prompt_tokens == len(render_prompt(srv.tok, HI))
    assert r.usage.completion_tokens == 12 and r.usage.total_tokens == r.usage.prompt_tokens + 12
    again = client.chat.completions.create(model="tiny-chat", messages=HI, max_tokens=12, seed=1)
    assert again.choices[0].message.content == c.message.content  # a seed makes it repeatable


def test_stream_matches_the_whole_reply(client):
    whole = client.chat.completions.create(model="tiny-chat", messages=HI, max_tokens=30, seed=2, temperature=0.9)
    texts, finishes, usage, chunks = streamed(client, messages=HI, max_tokens=30, seed=2, temperature=0.9,
                                              stream_options={"include_usage": True})
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(chunks) > 5  # the text came in pieces
    assert texts == {0: whole.choices[0].message.content} and finishes == {0: "length"}
    assert usage.completion_tokens == 30 and usage.prompt_tokens == whole.usage.prompt_tokens
    assert chunks[-1].choices == []  # the usage chunk is last, with no choices


def test_n_choices(client):
    r = client.chat.completions.create(model="tiny-chat", messages=HI, max_tokens=10, seed=3, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2] and r.usage.completion_tokens == 30
    assert len({c.message.content for c in r.choices}) > 1  # each choice draws from its own (seed, j)
    one = client.chat.completions.create(model="tiny-chat", messages=HI, max_tokens=10, seed=3)
    assert one.choices[0].message.content == r.choices[0].message.content
    texts, finishes, _, _ = streamed(client, messages=HI, max_tokens=10, seed=3, n=3)
    assert texts == {c.index: c.message.content for c in r.choices} and finishes == {0: "length", 1: "length",
                                                                                     2: "length"}


def test_stop_strings(client, srv):
    full = client.chat.completions.create(model="tiny-chat", messages=HI, max_tokens=40, seed=4).choices[0]
    text = full.message.content
    stop = text[12:14]
    expected = text[:text.find(stop)]
    r = client.chat.completions.create(model="tiny-chat", messages=HI, max_tokens=40, seed=4,
                                       stop=[stop, "never appears \u2603"])
    assert r.choices[0].message.content == expected and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 40
    texts, finishes, _, _ = streamed(client, messages=HI, max_tokens=40, seed=4, stop=stop)
    assert texts == {0: expected} and finishes == {0: "stop"}


def test_models_health_and_page(client, srv):
    assert [m.id for m in client.models.list().data] == ["tiny-chat"]
    status, _, body = get(srv.url, "/health")
    h = json.loads(body)
    assert status == 200 and h["status"] == "ok" and h["slots"] == 4 and h["context"] == 256
    status, ctype, page = get(srv.url, "/")
    assert status == 200 and ctype.startswith("text/html") and b"/v1/chat/completions" in page
    assert b"src=\"http" not in page and b"href=\"http" not in page  # nothing from outside
    assert get(srv.url, "/nope")[0] == 404


# --------------------------------------------------------------------------------------------------
# bad requests: 400 and OpenAI's error object


BAD = {
    "invalid JSON": b'{"messages": [',
    "not an object": b"[1, 2]",
    "nested too deep": b"[" * 100_000 + b"]" * 100_000,
    "not UTF-8": b'{"messages": "\xff\xfe"}',
    "no messages": {"max_tokens": 5},
    "empty messages": {"messages": []},
    "messages not a list": {"messages": "hi"},
    "unknown role": {"messages": [{"role": "wizard", "content": "hi"}]},
    "content not a string": {"messages": [{"role": "user", "content": 5}]},
    "message not an object": {"messages": ["hi"]},
    "huge max_tokens": {"messages": HI, "max_tokens": 10**9},
    "zero max_tokens": {"messages": HI, "max_tokens": 0},
    "max_tokens a string": {"messages": HI, "max_tokens": "10"},
    "max_tokens a bool": {"messages": HI, "max_tokens": True},
    "temperature a string": {"messages": HI, "temperature": "hot"},
    "temperature too high": {"messages": HI, "temperature": 7},
    "top_p zero": {"messages": HI, "top_p": 0},
    "top_k zero": {"messages": HI, "top_k": 0},
    "n fractional": {"messages": HI, "n": 1.5},
    "n too large": {"messages": HI, "n": 1000},
    "negative seed": {"messages": HI, "seed": -1},
    "stream a string": {"messages": HI, "stream": "yes"},
    "too many stops": {"messages": HI, "stop": ["a", "b", "c", "d", "e"]},
    "empty stop": {"messages": HI, "stop": [""]},
    "stop a number": {"messages": HI, "stop": 3},
    "too many messages": {"messages": HI * 300},
    "message too long": {"messages": [{"role": "user", "content": "x" * 40_000}]},
    "prompt over the context": {"messages": [{"role": "user", "content": "日本語 " * 2000}]},
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_is_400(srv, case):
    status, body = post(srv.url, BAD[case])
    assert status == 400, body
    err = body["error"]
    assert err["type"] == "invalid_request_error" and isinstance(err["message"], str) and err["message"]


def test_bad_request_through_the_client(client):
    with pytest.raises(openai.BadRequestError, match="role must be one of"):
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "wizard", "content": "x"}])


def raw(url, head):
    """Send raw request bytes; return the status line and the JSON body of the answer."""
    host, port = url[len("http://"):].split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head)
        answer = sock.makefile("rb").read()
    status, _, body = answer.partition(b"\r\n\r\n")
    return int(status.split()[1]), json.loads(body)


def test_body_limits(srv):
    """Refused from the headers alone, before a byte of the body is read."""
    status, body = raw(srv.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                       % (srv.limits.max_body_bytes + 1))
    assert status == 413 and body["error"]["code"] == "body_too_large"
    status, body = raw(srv.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 411 and body["error"]["code"] == "length_required"


def test_queue_bound_and_shutdown(files):
    """No engine thread: the first request waits for a slot, the next is over the bound (503); at
    shutdown the waiting one gets an error instead of hanging."""
    ckpt, tok_path = files
    s = Server(("127.0.0.1", 0), kvcache.DecodeWeights.load(ckpt), load_tokenizer(tok_path), slots=1, max_queued=2)
    serve = threading.Thread(target=s.serve_forever, daemon=True)
    serve.start()
    first = []
    t = threading.Thread(target=lambda: first.append(post(s.url, {"messages": HI, "n": 2, "max_tokens": 3})))
    t.start()
    for _ in range(3000):  # until the first request is queued (a bounded wait)
        if len(s.worker.waiting) == 2:
            break
        time.sleep(0.02)
    assert len(s.worker.waiting) == 2
    status, body = post(s.url, {"messages": HI, "max_tokens": 3})
    assert status == 503 and body["error"]["code"] == "overloaded"
    s.shutdown()
    s.worker.stop()
    t.join(timeout=30)
    s.server_close()
    assert first and first[0][0] == 500 and "shutting down" in first[0][1]["error"]["message"]


# --------------------------------------------------------------------------------------------------
# concurrency


def health(srv):
    return json.loads(get(srv.url, "/health")[2])


def test_dropped_client_frees_its_slot(srv, client):
    before = health(srv)["cancelled"]
    host, port = srv.url[len("http://"):].split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)  # a raw socket: we hang up ourselves
    body = json.dumps({"messages": HI, "stream": True, "max_tokens": 230, "seed": 9}).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    others = concurrent.futures.ThreadPoolExecutor(3)
    futures = [others.submit(streamed, client, messages=HI, max_tokens=60, seed=s) for s in range(3)]
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"HTTP/1.1 200")
    for _ in range(100):  # the headers, then the first chunk (sent before any token), then hang up
        line = reader.readline()
        if not line or line.startswith(b"data: "):
            break
    assert b'"role": "assistant"' in line
    reader.close()
    sock.close()
    for f in futures:  # the others finish normally
        texts, finishes, _, _ = f.result(timeout=120)
        assert finishes == {0: "length"} and texts[0]
    others.shutdown()
    for _ in range(3000):  # the server notices at its next write: a bounded wait, no timing asserted
        h = health(srv)
        if h["live"] == 0:
            break
        time.sleep(0.02)
    assert h["live"] == 0 and h["cancelled"] == before + 1


def test_32_concurrent_clients(client, srv):
    def one(i):
        kw = dict(messages=[{"role": "user", "content": f"client {i}"}], max_tokens=8 + i % 5, seed=i)
        if i % 2:
            texts, finishes, _, _ = streamed(client, **kw)
            return texts[0], finishes[0]
        r = client.chat.completions.create(model="tiny-chat", **kw)
        return r.choices[0].message.content, r.choices[0].finish_reason

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32), timeout=300))
    assert len(results) == 32 and all(text and finish == "length" for text, finish in results)
    assert health(srv)["live"] == 0


# --------------------------------------------------------------------------------------------------
# text: whole characters, stop strings held back


def test_choice_text_never_splits_a_character(files):
    tok = load_tokenizer(files[1])
    text = "日本語のテキスト 🙂🚀 Ελληνικά"
    ids = tok.encode_ordinary(text)
    assert any(tok.decode_bytes([i]).decode("utf-8", "replace") != tok.decode_bytes([i]).decode("utf-8", "ignore")
               for i in ids)  # some tokens are parts of a character
    ct = api.ChoiceText(tok, ["🚀 Ε"])
    pieces = [ct.push([i]) for i in ids] + [ct.flush()]
    assert "\ufffd" not in "".join(pieces) and "".join(pieces) == "日本語のテキスト 🙂" and ct.stopped
    ct = api.ChoiceText(tok, ["Ελλx"])  # a stop string that starts to match and then does not
    pieces = [ct.push([i]) for i in ids]
    assert "".join(pieces) + ct.flush() == text and not ct.stopped


# --------------------------------------------------------------------------------------------------
# the command line


def run_dir(files, tmp_path):
    """A run directory as `minigpt train` leaves one: checkpoints and the run's tokenizer.model."""
    ckpt, tok_path = files
    run = tmp_path / "run"
    run.mkdir()
    for step in (5, 10):
        shutil.copy(ckpt, run / f"ckpt_{step:06d}.bin")
    shutil.copy(tok_path, run / "tokenizer.model")
    return run


def test_cli_serves_a_run_directory_and_stops(files, tmp_path):
    run = run_dir(files, tmp_path)
    p = subprocess.Popen([sys.executable, "-m", "minigpt", "serve", str(run), "--port", "0", "--slots", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        url = line.split()[2].rstrip("/")
        assert url.startswith("http://127.0.0.1:")  # the default binds loopback only
        assert "model ckpt_000010," in line  # the newest checkpoint
        status, body = post(url, {"messages": HI, "max_tokens": 4})
        assert status == 200 and body["usage"]["completion_tokens"] == 4 and body["model"] == "ckpt_000010"
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) == 0


def test_cli_bad_input_is_one_line(files, tmp_path):
    plain = Tokenizer.train(TEXT, vocab_size=load_tokenizer(files[1]).n_vocab - 1)  # as many ids, no chat tokens
    plain.save(str(tmp_path / "plain.model"))
    alone = shutil.copy(files[0], tmp_path / "alone.bin")  # no tokenizer.model beside it
    cases = [["--checkpoint", files[0], "--tokenizer", str(tmp_path / "plain.model")],  # no chat tokens
             ["--checkpoint", files[0], "--tokenizer", str(tmp_path / "missing")],
             ["--checkpoint", str(alone)],                                             # no tokenizer
             [str(tmp_path / "nowhere")],
             [str(tmp_path)],                                                          # no checkpoints in it
             [files[0], "--tokenizer", files[1], "--port", "70000"],
             [files[0], "--tokenizer", files[1], "--slots", "0"],
             []]
    for extra in cases:
        r = subprocess.run([sys.executable, "-m", "minigpt", "serve", *extra], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (extra, r.stderr)
        if extra is cases[0]:
            assert "no chat tokens" in r.stderr

