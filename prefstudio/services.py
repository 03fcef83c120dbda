from .models import ApiToken, api_token_hash


def api_token_create(*, user, name: str = "default") -> str:
    """Create a token for ``user`` and return the raw key; it is shown once and stored hashed."""
    raw = ApiToken.new_raw_key()
    ApiToken.objects.create(user=user, name=name[:100], key_hash=api_token_hash(raw), prefix=raw[3:11])
    return raw
