"""Database layer: declarative base, models, engine and sessions (SQLite or PostgreSQL)."""
