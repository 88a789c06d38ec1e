"""Answering a question: the flow, the prompts, citations, and the answer-or-refuse decision."""
