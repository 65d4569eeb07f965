"""Talking to a chat model. Read in this order:

    session.py   a conversation in one KV cache, streamed replies
    terminal.py  `minigpt chat`
    api.py       the OpenAI chat-completions protocol: request checks, stop strings, reply objects
    server.py    `minigpt serve`: HTTP on the standard library, one engine thread (inference/engine.py)
    page.html    the web chat page the server shows at /
"""
