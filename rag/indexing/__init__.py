"""Building, storing and opening the index: vectors (FAISS, Milvus), BM25, Ray, the article set."""
