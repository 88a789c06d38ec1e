"""Text generation behind one interface: llama.cpp, transformers, an OpenAI-compatible server."""
