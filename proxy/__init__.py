"""A caching proxy for Redis: HTTP GET answered from a local LRU + TTL cache."""
