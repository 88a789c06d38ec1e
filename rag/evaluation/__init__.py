"""`rag eval`: the project's question set and RGB, scored, with reports."""
