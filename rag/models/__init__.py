"""The packaged models: which exist, where their weights come from, assembling and loading them."""
