"""`minigpt serve`: an OpenAI-compatible chat server and a web chat page, on the standard library.

    POST /v1/chat/completions   messages -> a reply, whole or streamed (Server-Sent Events)
    GET  /v1/models, /health    what is served; liveness
    GET  /                      the chat page (page.html)

Why the standard library (http.server) and not FastAPI + uvicorn: the work is the engine's, not
the web framework's. One thread steps the batch; each connection is one thread that parses,
submits its request and then blocks on a queue of tokens, which is the whole concurrency story
and reads top to bottom with no event loop to bridge. Tens of clients cost tens of idle threads.
A dropped client shows up as a failed write, which cancels its streams. No extra dependency.

    handler thread: parse + check (api.py) -> render prompt -> Worker.submit -> read request.events
    engine thread:  Worker.run: admit waiting choices into free slots, drop cancelled ones, step()
"""
import collections
import json
import os
import queue
import threading
import traceback
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .. import settings
from ..inference.engine import Engine
from ..inference.sample import open_model
from ..inference.tools import ToolBox, ToolEngine
from ..model.backend import RuntimeSettings, set_threads
from ..tokenizer.chat import IM_END
from . import api

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")


class Request:
    """One chat completion in flight: its settings, n choices, and the queue its tokens arrive on."""

    def __init__(self, chat):
        self.chat = chat
        self.events = queue.Queue()           # (choice, token or None, finish or None, error or None)
        self.cancelled = threading.Event()    # set by the handler: the client is gone or done
        self.dropped = set()                  # choices the handler no longer wants (a stop string was seen)

    def wants(self, j):
        return not self.cancelled.is_set() and j not in self.dropped


class Worker:
    """The engine thread: the only code that touches the engine."""

    def __init__(self, engine, stop_ids, max_queued):
        self.engine, self.stop_ids, self.max_queued = engine, stop_ids, max_queued
        self.waiting = collections.deque()    # (request, choice) not yet in a slot
        self.live = {}                        # engine stream id -> (request, choice)
        self.wake = threading.Condition()
        self.running = True
        self.cancelled = 0                    # streams ended early: clients gone, stop strings seen
        self.thread = threading.Thread(target=self.run, name="minigpt-engine", daemon=True)

    def submit(self, req):
        with self.wake:
            if len(self.waiting) + req.chat.n > self.max_queued:
                raise api.ApiError(f"the server is busy: {len(self.waiting)} choices wait for a slot; retry "
                                   f"later", status=503, kind="server_error", code="overloaded")
            self.waiting.extend((req, j) for j in range(req.chat.n))
            self.wake.notify()

    def stop(self):
        """End the engine thread; requests still waiting or decoding get an error, not a hang."""
        with self.wake:
            self.running = False
            self.wake.notify()
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        with self.wake:
            for req, j in list(self.waiting) + list(self.live.values()):
                req.events.put((j, None, None, "the server is shutting down"))
            self.waiting.clear()
            self.live.clear()

    def run(self):
        while True:
            with self.wake:
                while self.running and not self.waiting and not self.live:
                    self.wake.wait()
                if not self.running:
                    return
                admit = [self.waiting.popleft() for _ in range(min(len(self.waiting), len(self.engine.free)))]
            for sid, (req, j) in list(self.live.items()):
                if not req.wants(j):
                    self.engine.cancel(sid)
                    del self.live[sid]
                    self.cancelled += 1
            try:
                self.admit(admit)
                if self.live:
                    for sid, t, finish, *forced in self.engine.step():
                        req, j = self.live[sid] if finish is None else self.live.pop(sid)
                        req.events.put((j, t, finish, None))
                        for f in (forced[0] if forced else ()):  # a tool's output: text of the reply too
                            req.events.put((j, f, None, None))
            except Exception as e:  # a bug, not a bad request: fail the requests in flight, keep serving
                traceback.print_exc()
                for sid, (req, j) in self.live.items():
                    self.engine.cancel(sid)
                    req.events.put((j, None, None, f"internal error: {e}"))
                self.live.clear()

    def admit(self, admit):
        for req, j in admit:
            if not req.wants(j):
                continue
            c = req.chat
            seed = None if c.seed is None else (c.seed, j)
            try:
                sid = self.engine.add(c.prompt, c.temperature, c.top_k, c.top_p, seed, c.max_tokens, self.stop_ids)
            except ValueError as e:  # checked in api.py already: only a mismatch between the two gets here
                req.events.put((j, None, None, str(e)))
                continue
            self.live[sid] = (req, j)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60                              # seconds a slow client may take per read or write
    server_version = "minigpt"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            super().log_message(fmt, *args)

    # ---------------------------------------------------------------------------------- plumbing
    def send_json(self, status, obj):
        body = json.dumps(obj).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_error_json(self, e):
        if e.status >= 413 or e.status == 411:  # the body was not read: the connection cannot be reused
            self.close_connection = True
        self.send_json(e.status, e.body())

    def do_GET(self):
        s = self.server
        if self.path in ("/", "/index.html"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(s.page)))
            self.end_headers()
            self.wfile.write(s.page)
        elif self.path == "/health":
            w = s.worker
            self.send_json(200, {"status": "ok", "model": s.model_name, "slots": w.engine.cache.B,
                                 "context": s.maxT, "live": len(w.live), "waiting": len(w.waiting),
                                 "cancelled": w.cancelled})
        elif self.path in ("/v1/models", "/models"):
            self.send_json(200, api.models_list(s.model_name, s.created))
        else:
            self.send_error_json(api.ApiError(f"no route GET {self.path}", status=404, code="not_found"))

    def do_POST(self):
        if self.path not in ("/v1/chat/completions", "/chat/completions"):
            return self.send_error_json(api.ApiError(f"no route POST {self.path}", status=404, code="not_found"))
        try:
            req = Request(self.read_request())
            self.server.worker.submit(req)
        except api.ApiError as e:
            return self.send_error_json(e)
        try:
            (self.stream if req.chat.stream else self.reply)(req)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away: the worker frees its slots
        finally:
            req.cancelled.set()

    def read_request(self):
        s, length = self.server, self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise api.ApiError("a Content-Length header is required", status=411, code="length_required")
        if int(length) > s.limits.max_body_bytes:
            raise api.ApiError(f"the body is {length} bytes, at most {s.limits.max_body_bytes}", status=413,
                               code="body_too_large")
        return api.parse_chat_request(self.rfile.read(int(length)), s.tok, s.maxT, s.limits)

    def events(self, req, done):
        """(choice, token, finish) as the engine produces them, until every choice is done."""
        while not all(done):
            j, t, finish, error = req.events.get()
            if error:
                raise RuntimeError(error)
            if not done[j]:
                yield j, t, finish

    def advance(self, req, text, j, t, finish, done):
        """Token t of choice j into its text; returns (new text, finish reason or None)."""
        piece = text.push([] if t is None else [t])
        if text.stopped:
            req.dropped.add(j)  # a stop string: the engine may stop decoding this choice
            finish = "stop"
        if finish:
            piece += text.flush()
            done[j] = True
        return piece, finish

    # ---------------------------------------------------------------------------------- replies
    def reply(self, req):
        c, s = req.chat, self.server
        texts = [api.ChoiceText(s.tok, c.stop) for _ in range(c.n)]
        finishes, done = [None] * c.n, [False] * c.n
        try:
            for j, t, finish in self.events(req, done):
                finishes[j] = self.advance(req, texts[j], j, t, finish, done)[1]
        except RuntimeError as e:
            return self.send_json(500, api.ApiError(str(e), status=500, kind="server_error").body())
        rid, tokens = "chatcmpl-" + uuid.uuid4().hex, sum(t.tokens for t in texts)
        self.send_json(200, api.completion(rid, s.model_name, api.now(), [t.text for t in texts], finishes,
                                           len(c.prompt), tokens))

    def stream(self, req):
        c, s = req.chat, self.server
        rid, created = "chatcmpl-" + uuid.uuid4().hex, api.now()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the end of the stream is the end of the connection
        self.end_headers()
        self.close_connection = True

        def send(obj):
            self.wfile.write(b"data: " + json.dumps(obj).encode("utf-8") + b"\n\n")
            self.wfile.flush()

        texts = [api.ChoiceText(s.tok, c.stop) for _ in range(c.n)]
        done = [False] * c.n
        for j in range(c.n):
            send(api.chunk(rid, s.model_name, created, j, {"role": "assistant", "content": ""}))
        try:
            for j, t, finish in self.events(req, done):
                piece, finish = self.advance(req, texts[j], j, t, finish, done)
                if piece:
                    send(api.chunk(rid, s.model_name, created, j, {"content": piece}))
                if finish:
                    send(api.chunk(rid, s.model_name, created, j, {}, finish))
        except RuntimeError as e:
            send(api.ApiError(str(e), status=500, kind="server_error").body())
        if c.include_usage:
            send({"id": rid, "object": "chat.completion.chunk", "created": created, "model": s.model_name,
                  "choices": [], "usage": api.usage(len(c.prompt), sum(t.tokens for t in texts))})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen backlog: the default 5 resets clients that connect in a burst

    def __init__(self, address, weights, tok, model_name="minigpt", slots=8, maxT=None, max_queued=64,
                 limits=None, kernels=None, verbose=False, tools=None):
        engine = Engine(weights, slots, maxT, kernels)
        if tools is not None:  # a ToolBox: calls the model writes are run, outputs forced into its stream
            engine = ToolEngine(engine, tools, record=False)
        self.tok, self.model_name, self.maxT = tok, model_name, engine.maxT
        self.limits, self.verbose, self.created = limits or api.Limits(), verbose, api.now()
        with open(PAGE, "rb") as f:
            self.page = f.read()
        self.worker = Worker(engine, api.stop_token_ids(tok), max_queued)
        super().__init__(address, Handler)

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        """Serve in background threads (tests, benches); close() ends them."""
        self.worker.thread.start()
        self.serve_thread = threading.Thread(target=self.serve_forever, name="minigpt-http", daemon=True)
        self.serve_thread.start()
        return self

    def close(self):
        self.shutdown()
        self.worker.stop()
        self.server_close()


# --------------------------------------------------------------------------------------------------
# the command line


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"      # address to listen on (0.0.0.0: every interface; there is no authentication)
    port: int = 8000             # TCP port; 0: any free port (the URL is printed)
    slots: int = 16              # streams decoded together: rows of the KV cache
    context: int = None          # positions per slot (default: the model's block_size)
    max_queued: int = 64         # choices that may wait for a slot; more are answered 503
    model_name: str = None       # the model id clients see (default: the checkpoint's file name)
    half: bool = False           # decode with bf16 weights (a bf16 v5 checkpoint always does)
    verbose: bool = False        # log every HTTP request
    tools: bool = True           # run the calculator calls the model writes, their output forced into the reply

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], found {self.port}")
        if self.slots < 1 or self.max_queued < 1:
            raise ValueError(f"slots and max_queued must be >= 1, found {self.slots} and {self.max_queued}")


def add_arguments(p):
    p.add_argument("model", nargs="?", help="a chat model: a run directory (its newest checkpoint and "
                                            "tokenizer) or a checkpoint .bin")
    p.add_argument("--checkpoint", default=None, help="the same as MODEL")
    p.add_argument("--tokenizer", default=None, help="its tokenizer, with the chat tokens (default: the run "
                                                     "directory's tokenizer.model)")
    settings.add_arguments(p, ServeSettings, RuntimeSettings)


def run(args):
    if args.model and args.checkpoint and args.model != args.checkpoint:
        raise ValueError(f"two models given: {args.model} and --checkpoint {args.checkpoint}")
    path = args.model or args.checkpoint
    if not path:
        raise ValueError("give a model: a run directory or a checkpoint (minigpt serve runs/NAME)")
    s = settings.build(ServeSettings, settings.from_args(args, ServeSettings))
    rt = settings.build(RuntimeSettings, settings.from_args(args, RuntimeSettings))
    if rt.threads:
        set_threads(rt.threads)
    weights, tok, ckpt = open_model(path, args.tokenizer, half=True if s.half else None)
    if tok is None:
        raise ValueError(f"{path}: no tokenizer: give --tokenizer (a chat model's, with the chat tokens)")
    if IM_END not in getattr(tok, "special_tokens", {}):
        raise ValueError(f"{args.tokenizer or path}: the tokenizer has no chat tokens (<|im_start|> ...): "
                         f"serve a chat model (minigpt sft adds them)")
    name = s.model_name or os.path.splitext(os.path.basename(ckpt))[0]
    server = Server((s.host, s.port), weights, tok, name, s.slots, s.context, s.max_queued,
                    kernels=rt.backend, verbose=s.verbose, tools=ToolBox(tok) if s.tools else None)
    print(f"minigpt serve: {server.url}/ (chat page), {server.url}/v1 (OpenAI API), model {name}, "
          f"{s.slots} slots x {server.maxT} positions", flush=True)
    server.worker.thread.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.worker.stop()
        server.server_close()
    return 0
