"""Talking to a chat model: the OpenAI-compatible server and its web page (`minigpt serve`)."""
