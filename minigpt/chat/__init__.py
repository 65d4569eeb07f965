"""Talking to a chat model: session.py (history in a KV cache, streamed replies), terminal.py (`minigpt chat`)."""
