"""Integrations with web frameworks: FastAPI, Flask, Django."""
