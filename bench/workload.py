"""What the benchmark reads: its keys and their values, shared by its servers and its load."""

VALUE = b"v" * 100
HOT_KEYS = 1_000  # redis-benchmark's -r keyspace: key:000000000000 ... (key_name)
CAPACITY = 10_000  # the proxy's CACHE_MAXSIZE in the benchmark; the ceiling holds as many


def key_name(number: int) -> str:
    """The benchmark's keys, as redis-benchmark -r names them."""
    return f"key:{number:012d}"
