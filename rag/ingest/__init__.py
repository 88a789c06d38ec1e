"""Reading articles (.txt, .md, .html, .pdf) and cutting them into sentence-aware chunks."""
