"""Shared fixtures for tests and notebooks: tiny datasets in official layouts and tiny models."""
