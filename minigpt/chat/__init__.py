"""Talking to a chat model. Read in this order:

    session.py   one conversation: its history in a KV cache, replies streamed token by token
    terminal.py  `minigpt chat`: the terminal chat (and -p for one question)
    api.py       the OpenAI chat-completions protocol: request checks, stop strings, reply objects
    server.py    `minigpt serve`: HTTP on the standard library, one engine thread (inference/engine.py)
    page.html    the web chat page the server shows at /
"""
