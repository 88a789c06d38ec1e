"""Tooling outside the product: benches and fitting the answer-or-refuse decision."""
