"""The Gradio chat page over the `rag` library (`rag chat`)."""

import rag  # noqa: F401  - the offline environment (no telemetry, no model hub) before gradio is imported
from ui.app import build_app, serve_page

__all__ = ["build_app", "serve_page"]
