"""Whether the Hugging Face hub can be reached, so a model that is not cached fails fast offline."""

import socket


def hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True
