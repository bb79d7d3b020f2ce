"""SQLite storage (aiosqlite): migrations and the repositories behind the domain's ports."""
