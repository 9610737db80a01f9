"""The four roles of b-durable; each runs as its own process and talks to the others only through Redis."""
