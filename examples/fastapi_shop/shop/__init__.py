"""A small shop on FastAPI that takes payments and subscriptions through stripeline."""
