"""Async client of Quay's tag API, its payload models and its errors."""
